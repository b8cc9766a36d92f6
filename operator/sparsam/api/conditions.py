"""metav1.Condition-style conditions: the stored shape every kind's status shares, and a pure
setter.

A condition's `lastTransitionTime` moves only when its status changes, so setting the same
condition twice leaves status untouched (and the operator writes status only when it changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

Status = Literal["True", "False", "Unknown"]

READY: Final = "Ready"


@dataclass(frozen=True, slots=True)
class Condition:
    """One entry of status.conditions, exactly as metav1.Condition's schema has it."""

    type: str
    status: Status
    reason: str
    message: str
    #: RFC 3339.
    last_transition_time: str
    observed_generation: int | None = None

    def to_raw(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
        }
        if self.observed_generation is not None:
            raw["observedGeneration"] = self.observed_generation
        return raw


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str | None) -> datetime | None:
    """A timestamp as the apiserver writes it (and `rfc3339` does), in UTC; None for none."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: Status,
    reason: str,
    message: str,
    now: datetime,
    observed_generation: int | None = None,
) -> tuple[Condition, ...]:
    """Return `conditions` with the condition of `type_` replaced (or added).

    The transition time is kept when the status did not change, and set to `now` when it did.
    """
    old = find(conditions, type_)
    moved = old is None or old.status != status
    stamp = rfc3339(now) if moved or old is None else old.last_transition_time
    new = Condition(type_, status, reason, message, stamp, observed_generation)
    return (*(c for c in conditions if c.type != type_), new)
