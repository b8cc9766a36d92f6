"""Shared by the providers that talk to an apiserver: API errors as the provider's typed errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from sparsam.providers.nodepool import NotFound, ProviderError, Transient

T = TypeVar("T")

#: Statuses that may pass by themselves: conflicts (someone wrote first), throttling, 5xx.
TRANSIENT_STATUSES: Final = frozenset({409, 429, 500, 502, 503, 504})


def translate(exc: ApiException, pool: str, what: str) -> ProviderError:
    """One ApiException as NotFound, Transient or ProviderError, with a one-line message."""
    status = exc.status or 0
    reason = exc.reason or "no reason"
    if status == 404:
        return NotFound(pool, f"{what}: not found")
    if status in TRANSIENT_STATUSES or status == 0:
        return Transient(pool, f"{what}: {status} {reason}")
    return ProviderError(pool, f"{what}: {status} {reason}")


@contextmanager
def api_errors(pool: str, what: str) -> Iterator[None]:
    """Run API calls; re-raise their failures as the provider's typed errors."""
    try:
        yield
    except ApiException as exc:
        raise translate(exc, pool, what) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Transient(pool, f"{what}: {type(exc).__name__}: {exc}") from exc


def call(pool: str, what: str, fn: Callable[[], T]) -> T:
    with api_errors(pool, what):
        return fn()
