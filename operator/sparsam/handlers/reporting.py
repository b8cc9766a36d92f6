"""Writing what a pass found back to the object: status (only what changed) and Events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from sparsam.controllers.results import Event


def write_status(body: kopf.Body, patch: kopf.Patch, status: Mapping[str, Any]) -> None:
    """Patch only the status fields that changed, so an idle object writes nothing."""
    current = body.get("status") or {}
    for key, value in status.items():
        if current.get(key) != value:
            patch.status[key] = value


def post(body: kopf.Body, events: Iterable[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
