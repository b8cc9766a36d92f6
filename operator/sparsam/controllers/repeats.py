"""Warnings that would otherwise be said again on every pass, said once per window.

A drain blocked by a PodDisruptionBudget, or refused by the apiserver, stays so for minutes or
hours, and the pool's pass (every 10 s) finds it again each time: 360 Events an hour for one
node, which bury everything else `kubectl describe` shows. The Kubernetes event recorder's
spam filter exists for the same reason; here an Event of one of `reasons` is posted again for
the same object only when its message changed or `every` has passed. The state it is about
stays in status the whole time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sparsam.controllers.results import Event


class Repeats:
    """Not thread-safe: its controller calls it under its own lock."""

    def __init__(self, reasons: Iterable[str], every: timedelta) -> None:
        self._reasons = frozenset(reasons)
        self._every = every
        self._said: dict[tuple[str, str, str], datetime] = {}

    def quieted(self, obj: str, events: Iterable[Event], now: datetime) -> tuple[Event, ...]:
        """`events` for `obj`, less those said already within the window."""
        self._said = {k: t for k, t in self._said.items() if now - t < self._every}
        out: list[Event] = []
        for event in events:
            key = (obj, event.reason, event.message)
            if event.reason in self._reasons:
                if key in self._said:
                    continue
                self._said[key] = now
            out.append(event)
        return tuple(out)
