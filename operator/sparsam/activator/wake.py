"""Asking the operator to wake a service that has no ready replica.

The activator does not scale anything itself: it writes the time of the request into the
annotation ``sparsam.dev/wake-requested-at`` on the InferenceService, and the operator, seeing a
value newer than the last it handled, scales the service to at least one replica. A burst of
held requests must not become a burst of API writes, so `ThrottledWaker` asks at most once per
service per interval and lets every request held in that interval share the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from sparsam.activator.backends import ServiceKey
from sparsam.api import constants as c

logger = logging.getLogger(__name__)


class ServiceNotFoundError(LookupError):
    """There is no such InferenceService: nothing to wake, and nothing to wait for."""


class Waker(Protocol):
    async def wake(self, key: ServiceKey) -> None:
        """Ask for `key` to be scaled up. ServiceNotFoundError if it does not exist; any other
        failure is an exception the caller logs and retries later."""
        ...


def wake_timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. ``2026-11-22T07:00:01.123456Z``."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeWaker:
    """Writes the wake annotation with a JSON merge patch (only that key; nothing else of the
    object is touched, and no resourceVersion is needed)."""

    def __init__(self, api: ApiClient, now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self._custom = CustomObjectsApi(api)
        self._now = now

    async def wake(self, key: ServiceKey) -> None:
        await asyncio.to_thread(self._patch, key)

    def _patch(self, key: ServiceKey) -> None:
        namespace, name = key
        body = {
            "metadata": {"annotations": {c.ANNOTATION_WAKE_REQUESTED: wake_timestamp(self._now())}}
        }
        try:
            self._custom.patch_namespaced_custom_object(
                c.GROUP,
                c.VERSION,
                namespace,
                c.INFERENCE_SERVICE.plural,
                name,
                body,
                _content_type="application/merge-patch+json",
                _request_timeout=10,
            )
        except ApiException as error:
            if error.status == 404:
                raise ServiceNotFoundError(
                    f"InferenceService {namespace}/{name} not found"
                ) from None
            raise


class LoggingWaker:
    """Static mode: there is no operator to ask, so only say that a wake would be asked."""

    async def wake(self, key: ServiceKey) -> None:
        logger.info(
            "%s/%s has no ready backend; holding requests (static mode: nothing to wake)", *key
        )


class ThrottledWaker:
    """At most one wake per service per `interval` seconds; callers within it share its result.

    Every held request calls `wake` as often as it likes (once per interval while it waits); the
    first call of an interval starts the request, later ones await the same one. Failures other
    than ServiceNotFoundError are logged here and not raised: the request keeps waiting and the
    next interval tries again.
    """

    def __init__(
        self, inner: Waker, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._interval = interval
        self._clock = clock
        self._last: dict[ServiceKey, tuple[float, asyncio.Task[None]]] = {}

    @property
    def interval(self) -> float:
        return self._interval

    async def wake(self, key: ServiceKey) -> None:
        now = self._clock()
        last = self._last.get(key)
        if last is None or now - last[0] >= self._interval:
            last = (now, asyncio.create_task(self._inner.wake(key)))
            self._last[key] = last
            last[1].add_done_callback(self._log_failure)
        try:
            # shield: one waiter giving up (its client went away) must not cancel the others'.
            await asyncio.shield(last[1])
        except ServiceNotFoundError:
            raise
        except Exception:  # noqa: S110 - logged once per attempt by _log_failure
            pass

    def forget(self, key: ServiceKey) -> None:
        self._last.pop(key, None)

    @staticmethod
    def _log_failure(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, ServiceNotFoundError):
            logger.warning("cannot ask for a wake-up: %s", error)
