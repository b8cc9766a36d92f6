"""Refusals from the apiserver, as one-line errors the controllers report and retry."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException


class ApiRefused(RuntimeError):
    """The apiserver refused a call for a reason that is not "not now" or "already done"; the
    message is one line (what was asked, status, reason), never the response body."""


def refused(what: str, exc: ApiException) -> ApiRefused:
    return ApiRefused(f"{what}: {exc.status} {exc.reason or 'no reason'}")
