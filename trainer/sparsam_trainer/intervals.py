"""Parse ``--checkpoint-interval``: a Go-style duration (``90s``, ``10m``, ``1h30m``) or a step
count (``200steps``).

Durations are what TrainingJob's ``spec.checkpoint.interval`` holds (the operator computes an
``auto`` interval from the spot interruption rate and the checkpoint cost and passes a duration);
step counts are for tests and reproducible runs, where wall time must not change what is saved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# Go's grammar, as the CRD's CEL rule and sparsam.api.parse accept it.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_STEPS = re.compile(r"^(\d+)\s*steps?$")


@dataclass(frozen=True)
class Interval:
    """Exactly one of ``seconds`` and ``steps`` is set."""

    seconds: float | None = None
    steps: int | None = None

    def due(self, steps_since: int, seconds_since: float) -> bool:
        if self.steps is not None:
            return steps_since >= self.steps
        assert self.seconds is not None
        return seconds_since >= self.seconds


def parse_interval(text: str) -> Interval:
    """``"200steps"`` -> every 200 steps; ``"1h30m"`` -> every 5400 s. ValueError otherwise."""
    value = text.strip().lower()
    steps = _STEPS.match(value)
    if steps:
        count = int(steps.group(1))
        if count < 1:
            raise ValueError(f"checkpoint interval {text!r}: step count must be at least 1")
        return Interval(steps=count)
    parts = _DURATION_PART.findall(value)
    if not value or "".join(number + unit for number, unit in parts) != value:
        raise ValueError(
            f"checkpoint interval {text!r}: expected a duration such as 90s, 10m or 1h30m, "
            "or a step count such as 200steps"
        )
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"checkpoint interval {text!r}: must be longer than zero")
    return Interval(seconds=seconds)
