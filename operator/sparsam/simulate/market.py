"""The simulated spot market of one pool: how often its nodes are reclaimed, when it refuses to
launch new ones, and how often it takes a whole group of nodes at once.

Three mechanisms, each per pool (`SpotMarket`), each independent of the others and of the other
pools (every pool draws from its own seeded stream):

- **Hazard**: every node of the pool lives an exponential time with rate `hazard_per_hour`
  (preemptions per node-hour) from the moment it is ready. The Spot Advisor band's conversion
  (`spot.hourly_hazard`) is one way to get a rate; measured rates are given directly.
- **Refusals**: while the pool is in a refusal window, a launch (`SpotLaunches.scale_up`)
  raises `InsufficientCapacity`, the provider's own exception, and adds nothing. Windows come
  from a CSV trace (`parse_refusal_csv`, format below) or from `OutageModel`: outage lengths
  lognormal, fitted to a median and a p90; gaps between outages exponential, their mean set so
  that the long-run fraction of time refused is `refused_fraction`; seeded.
- **Group losses**: events at rate `group_loss_per_hour` per pool (a Poisson process, whether
  the pool has nodes or not); each event preempts every node the pool has (ready or booting)
  with probability `group_loss_fraction` (1.0: the whole group goes at once).

Refusal CSV: one row per change of state, `timestamp,state`, `state` being `available` or
`refused`; an optional header row `timestamp,state`; blank rows and rows starting with `#` are
skipped. Timestamps are either all seconds since the simulation's start (numbers, >= 0) or all
ISO-8601 (`2024-05-01T10:00:00Z`; without a zone, UTC), the first row's time then being the
simulation's start. Timestamps strictly increase. Before the first row the pool is available;
after the last row its state holds to the end of the run. Errors name the file and the row.

Assumptions (each favours sparsam; the benchmark prints them):

- a refusal window refuses every launch and an available pool grants every launch: no partial
  grants, no per-pool capacity limit outside the windows;
- refusals, hazard and group losses are independent of each other: a reclaimed group does not
  make the pool refuse its replacement (in real markets the two often come together);
- the pools are independent of each other (real zones and instance types share outages);
- on-demand pools never refuse and are never preempted.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

from sparsam.providers.nodepool import InsufficientCapacity
from sparsam.simulate.traces import SimulationError, TraceError

#: z such that P(Z <= z) = 0.9 for a standard normal Z.
Z90: Final = 1.2815515655446004
AVAILABLE: Final = "available"
REFUSED: Final = "refused"

#: [start, end) in seconds since the simulation's start; end may be inf.
Window = tuple[float, float]


class RefusalSource(Protocol):
    """Where a pool's refusal windows come from."""

    def windows(self, rng: random.Random) -> Iterator[Window]:
        """The windows in time order, non-overlapping; may be endless."""
        ...


@dataclass(frozen=True, slots=True)
class RefusalTrace:
    """Refusal windows read from a trace (`parse_refusal_csv`)."""

    spans: tuple[Window, ...]
    source: str = "trace"

    def windows(self, rng: random.Random) -> Iterator[Window]:
        return iter(self.spans)

    def describe(self) -> str:
        return f"refusal windows from {self.source} ({len(self.spans)} windows)"


@dataclass(frozen=True, slots=True)
class OutageModel:
    """Outages of lognormal length (median `median_s`, p90 `p90_s`) separated by exponential
    gaps whose mean makes the long-run refused fraction `refused_fraction`. The process starts
    in an outage with probability `refused_fraction` (fresh length), else in a gap."""

    refused_fraction: float
    median_s: float
    p90_s: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.refused_fraction < 1.0:
            raise SimulationError(
                f"a refused fraction must be in [0, 1), not {self.refused_fraction} "
                "(a pool that always refuses is a CSV trace with one 'refused' row)"
            )
        if not 0.0 < self.median_s <= self.p90_s or not math.isfinite(self.p90_s):
            raise SimulationError(
                f"outage lengths need 0 < median <= p90, not median {self.median_s}s, "
                f"p90 {self.p90_s}s"
            )

    @property
    def mu(self) -> float:
        return math.log(self.median_s)

    @property
    def sigma(self) -> float:
        return math.log(self.p90_s / self.median_s) / Z90

    @property
    def mean_outage_s(self) -> float:
        return math.exp(self.mu + self.sigma**2 / 2)

    @property
    def mean_gap_s(self) -> float:
        """E[gap] with f = E[L] / (E[L] + E[gap])."""
        if self.refused_fraction <= 0:
            return math.inf
        return self.mean_outage_s * (1.0 - self.refused_fraction) / self.refused_fraction

    def windows(self, rng: random.Random) -> Iterator[Window]:
        if self.refused_fraction <= 0:
            return
        t = 0.0
        if rng.random() < self.refused_fraction:
            t = rng.lognormvariate(self.mu, self.sigma)
            yield (0.0, t)
        while True:
            start = t + rng.expovariate(1.0 / self.mean_gap_s)
            t = start + rng.lognormvariate(self.mu, self.sigma)
            yield (start, t)

    def describe(self) -> str:
        return (
            f"outages lognormal (median {self.median_s / 60:g} min, p90 "
            f"{self.p90_s / 3600:g} h, mean {self.mean_outage_s / 3600:.2f} h), exponential "
            f"gaps (mean {self.mean_gap_s / 3600:.2f} h): {self.refused_fraction:.0%} of the "
            "time refused"
        )


class Availability:
    """A pool's refusal windows, drawn lazily from its source as the clock asks for them."""

    def __init__(self, source: RefusalSource, rng: random.Random) -> None:
        self._next = source.windows(rng)
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._exhausted = False

    def _cover(self, t: float) -> None:
        """Draw windows until one ends after `t` (or there are no more)."""
        while not self._exhausted and (not self._ends or self._ends[-1] <= t):
            window = next(self._next, None)
            if window is None:
                self._exhausted = True
                return
            self._starts.append(window[0])
            self._ends.append(window[1])

    def refused_until(self, t: float) -> float | None:
        """The end of the refusal window `t` is in, or None when the pool launches at `t`."""
        self._cover(t)
        index = bisect.bisect_right(self._starts, t) - 1
        if index >= 0 and t < self._ends[index]:
            return self._ends[index]
        return None

    def refused_seconds(self, start: float, end: float) -> float:
        """Seconds of [start, end) the pool spent refusing."""
        self._cover(end)
        return sum(
            max(0.0, min(e, end) - max(s, start))
            for s, e in zip(self._starts, self._ends, strict=True)
        )

    def windows_until(self, end: float) -> list[Window]:
        self._cover(end)
        return [(s, e) for s, e in zip(self._starts, self._ends, strict=True) if s < end]


@dataclass(frozen=True, slots=True)
class SpotMarket:
    """One spot pool's market (see the module docstring)."""

    hazard_per_hour: float = 0.0
    refusals: RefusalTrace | OutageModel | None = None
    group_loss_per_hour: float = 0.0
    group_loss_fraction: float = 1.0

    def __post_init__(self) -> None:
        for name, value in (
            ("hazard", self.hazard_per_hour),
            ("group loss rate", self.group_loss_per_hour),
        ):
            if not 0.0 <= value < math.inf:
                raise SimulationError(f"a {name} per hour must be >= 0 and finite, not {value}")
        if not 0.0 < self.group_loss_fraction <= 1.0:
            raise SimulationError(
                f"a group loss fraction must be in (0, 1], not {self.group_loss_fraction}"
            )

    @property
    def node_hazard_per_hour(self) -> float:
        """Preemptions per node-hour from both causes: what an operator observing the pool
        would measure, and what the checkpoint interval is computed from."""
        return self.hazard_per_hour + self.group_loss_per_hour * self.group_loss_fraction


class SpotLaunches:
    """The simulated provider's launch call: refuses in a pool's refusal window exactly as a
    provider does, raising `InsufficientCapacity(pool, message)` and adding nothing."""

    def __init__(self, availability: dict[str, Availability]) -> None:
        self.availability = availability

    def scale_up(self, pool: str, count: int, t: float) -> None:
        windows = self.availability.get(pool)
        until = None if windows is None else windows.refused_until(t)
        if until is not None:
            raise InsufficientCapacity(
                pool,
                f"no spot capacity for {count} node(s) at t={t:.0f}s "
                f"(refusing until t={until:.0f}s)",
            )


# --- the CSV trace -------------------------------------------------------------------------


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def _iso(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_refusal_csv(text: str, source: str = "refusal trace") -> RefusalTrace:
    """Refusal windows from CSV text (format in the module docstring); a TraceError names
    `source` and the row (1-based line number) of the first bad row."""
    rows: list[tuple[int, float, str]] = []
    kind: str | None = None
    origin: datetime | None = None
    for line, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
            continue
        cells = [f.strip() for f in fields]
        if not rows and kind is None and [x.lower() for x in cells] == ["timestamp", "state"]:
            continue
        where = f"{source} row {line}"
        if len(cells) != 2:
            raise TraceError(f"{where}: expected 'timestamp,state', got {len(cells)} field(s)")
        stamp, state = cells[0], cells[1].lower()
        if state not in (AVAILABLE, REFUSED):
            raise TraceError(f"{where}: state {cells[1]!r} is neither 'available' nor 'refused'")
        seconds = _seconds(stamp)
        if seconds is not None:
            if kind == "iso":
                raise TraceError(f"{where}: {stamp!r} is seconds, earlier rows are ISO-8601")
            if not 0.0 <= seconds < math.inf:
                raise TraceError(f"{where}: {stamp!r} seconds must be >= 0 and finite")
            kind = "seconds"
        else:
            moment = _iso(stamp)
            if moment is None:
                raise TraceError(f"{where}: {stamp!r} is neither seconds nor an ISO-8601 time")
            if kind == "seconds":
                raise TraceError(f"{where}: {stamp!r} is ISO-8601, earlier rows are seconds")
            kind = "iso"
            origin = origin or moment
            seconds = (moment - origin).total_seconds()
        if rows and seconds <= rows[-1][1]:
            raise TraceError(
                f"{where}: {stamp!r} is not after row {rows[-1][0]}'s time "
                "(timestamps must strictly increase)"
            )
        rows.append((line, seconds, state))
    if not rows:
        raise TraceError(f"{source}: no rows (expected 'timestamp,state' rows)")
    spans: list[Window] = []
    start: float | None = None
    for _, seconds, state in rows:
        if state == REFUSED and start is None:
            start = seconds
        elif state == AVAILABLE and start is not None:
            spans.append((start, seconds))
            start = None
    if start is not None:
        spans.append((start, math.inf))
    return RefusalTrace(tuple(spans), source)


def load_refusal_csv(path: Path) -> RefusalTrace:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise TraceError(f"no refusal trace at {path}") from exc
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path} is not a text CSV: {exc}") from exc
    return parse_refusal_csv(text, str(path))
