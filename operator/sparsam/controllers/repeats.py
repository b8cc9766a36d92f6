"""Warnings that would otherwise be said again on every pass, said once per window and counted.

A drain blocked by a PodDisruptionBudget or at maxNodes, a provider refusing a node, a job no
pool can hold: each stays so for minutes or hours, and the object's pass (every 5 or 10 s)
finds it again each time: hundreds of Events an hour for one object, which bury everything
else `kubectl describe` shows. Kubernetes' own event recorder aggregates the same way (its
EventCorrelator, and the events.k8s.io series): an Event with the same type, reason and
message for the same object is posted once; the repeats within the window are counted, not
posted; the first one after the window is posted again with the count of those it stood for,
as a series' `count` says how often it happened. A changed message is a new Event at once.
The state it is about stays in status the whole time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sparsam.controllers.results import Event


@dataclass(slots=True)
class _Series:
    #: When the Event was last posted, and how many repeats were counted since.
    posted: datetime
    count: int = 0


class Repeats:
    """Not thread-safe: its controller calls it under its own lock. `reasons`: the reasons it
    aggregates; None aggregates every Warning."""

    def __init__(self, reasons: Iterable[str] | None, every: timedelta) -> None:
        self._reasons = None if reasons is None else frozenset(reasons)
        self._every = every
        self._said: dict[tuple[str, str, str, str], _Series] = {}

    def quieted(self, obj: str, events: Iterable[Event], now: datetime) -> tuple[Event, ...]:
        """`events` for `obj`, less those posted already within the window (counted)."""
        # A series not repeated within a window, or not met again for two, is forgotten: the
        # memory holds only live series, however many objects and messages there were.
        self._said = {
            k: s
            for k, s in self._said.items()
            if now - s.posted < (2 * self._every if s.count else self._every)
        }
        out: list[Event] = []
        for event in events:
            if not self._aggregates(event):
                out.append(event)
                continue
            key = (obj, event.type, event.reason, event.message)
            series = self._said.get(key)
            if series is not None and now - series.posted < self._every:
                series.count += 1
                continue
            if series is not None and series.count:
                since = series.posted.strftime("%H:%M:%S")
                times = "1 time" if series.count == 1 else f"{series.count} times"
                event = replace(event, message=f"{event.message} (repeated {times} since {since})")
            self._said[key] = _Series(now)
            out.append(event)
        return tuple(out)

    def forget(self, obj: str) -> None:
        """`obj` is gone: drop its series."""
        self._said = {k: s for k, s in self._said.items() if k[0] != obj}

    def _aggregates(self, event: Event) -> bool:
        if self._reasons is None:
            return event.type == "Warning"
        return event.reason in self._reasons
