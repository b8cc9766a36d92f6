"""What a controller pass returns to its Kopf handler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """An Event to post on the object."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class PassResult:
    """The object's new status (raw, camelCase; only the fields the pass owns) and the Events
    the pass produced."""

    status: dict[str, Any]
    events: tuple[Event, ...] = ()
