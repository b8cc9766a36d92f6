"""Refusals from the apiserver, as one-line errors the controllers report and retry."""

from __future__ import annotations

import contextlib
import json

from kubernetes.client.exceptions import ApiException

#: The apiserver's own sentence is kept up to this long (it names the object and the rule).
_MESSAGE_CHARS = 300


class ApiRefused(RuntimeError):
    """The apiserver refused a call for a reason that is not "not now" or "already done"; the
    message is one line (what was asked, status, reason, and the apiserver's own sentence,
    e.g. which RBAC rule or admission policy refused), never the whole response body."""


def refused(what: str, exc: ApiException) -> ApiRefused:
    said = ""
    # Not a Status object (no body, not JSON): status and reason say enough.
    with contextlib.suppress(ValueError, AttributeError):
        said = str(json.loads(exc.body or "{}").get("message") or "")
    said = " ".join(said.split())[:_MESSAGE_CHARS]
    return ApiRefused(
        f"{what}: {exc.status} {exc.reason or 'no reason'}" + (f": {said}" if said else "")
    )
