"""How long a replica takes from created to ready in the serving replay: drawn per cold start,
never a constant the policy knows.

    dist = bimodal_default()                     # or fixed(20.0), or load_cold_starts(path)
    rng = random.Random(seed)
    seconds = dist.draw(rng)                     # one replica's boot
    dist.median_s, dist.mean_s                   # what a policy / the optimum may know

The default is bimodal because model load times are: a model whose weights are in the node's
page cache or on a local disk loads in about 20 s, one that must be pulled loads in about 40 s.
Two log-normal modes (57 % around 20 s, 43 % around 38 s, spread 0.15 and 0.16) give p50 about
23 s and p99 about 52 s, the statistics of a production distribution of model load times.
A CSV of measured load times (one number of seconds per row, first column; a header row whose
first cell is not a number is skipped) is resampled uniformly.
"""

from __future__ import annotations

import csv
import math
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sparsam.simulate.traces import SimulationError

__all__ = [
    "ColdStartError",
    "ColdStarts",
    "bimodal_default",
    "fixed",
    "load_cold_starts",
    "parse_cold_starts",
]

#: Draws of a parametric distribution are clipped here: a boot is never instant, and the
#: replay's horizon must reach past the longest one.
_FLOOR_S: Final = 1.0
_CEILING_S: Final = 300.0
#: Draws used to state a parametric distribution's median and mean (seeded, so stable).
_MOMENT_DRAWS: Final = 20_000


class ColdStartError(SimulationError):
    """A cold-start distribution that cannot be used (an empty or malformed CSV)."""


@dataclass(frozen=True, slots=True)
class _Mode:
    weight: float
    median_s: float
    sigma: float


@dataclass(frozen=True, slots=True)
class ColdStarts:
    """A distribution of boot times in seconds: fixed, a mixture of log-normal modes, or an
    empirical sample (exactly one of `modes` / `sample` is set, or neither for fixed)."""

    name: str
    fixed_s: float | None = None
    modes: tuple[_Mode, ...] = ()
    sample: tuple[float, ...] = ()

    def draw(self, rng: random.Random) -> float:
        if self.fixed_s is not None:
            return self.fixed_s
        if self.sample:
            return rng.choice(self.sample)
        pick, acc = rng.random(), 0.0
        mode = self.modes[-1]
        for m in self.modes:
            acc += m.weight
            if pick < acc:
                mode = m
                break
        value = rng.lognormvariate(math.log(mode.median_s), mode.sigma)
        return min(_CEILING_S, max(_FLOOR_S, value))

    def _population(self) -> Sequence[float]:
        if self.fixed_s is not None:
            return (self.fixed_s,)
        if self.sample:
            return self.sample
        rng = random.Random(0)  # noqa: S311 - stating moments, not cryptography
        return [self.draw(rng) for _ in range(_MOMENT_DRAWS)]

    @property
    def median_s(self) -> float:
        return float(statistics.median(self._population()))

    @property
    def mean_s(self) -> float:
        return float(statistics.fmean(self._population()))

    @property
    def max_s(self) -> float:
        """The longest boot a draw can give (the replay's horizon reaches past it)."""
        if self.fixed_s is not None:
            return self.fixed_s
        if self.sample:
            return max(self.sample)
        return _CEILING_S

    def quantile(self, q: float) -> float:
        ordered = sorted(self._population())
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fixed(seconds: float) -> ColdStarts:
    if not math.isfinite(seconds) or seconds < 0:
        raise ColdStartError(f"a cold start must be a number of seconds >= 0, not {seconds}")
    return ColdStarts(f"fixed {seconds:g}s", fixed_s=float(seconds))


def bimodal_default() -> ColdStarts:
    """p50 about 23 s, p99 about 52 s (module docstring)."""
    return ColdStarts(
        "bimodal p50~23s p99~52s",
        modes=(_Mode(0.57, 20.0, 0.15), _Mode(0.43, 38.0, 0.16)),
    )


def parse_cold_starts(rows: Iterable[Sequence[str]], source: str = "cold-start CSV") -> ColdStarts:
    """An empirical distribution from CSV rows (first cell: seconds). Errors name the row."""
    values: list[float] = []
    for number, row in enumerate(rows, start=1):
        cell = row[0].strip() if row else ""
        if not cell:
            raise ColdStartError(f"{source} row {number}: empty (expected seconds)")
        try:
            value = float(cell)
        except ValueError:
            if number == 1 and not values:
                continue  # a header
            raise ColdStartError(f"{source} row {number}: {cell!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ColdStartError(f"{source} row {number}: {cell} is not a duration >= 0")
        values.append(value)
    if not values:
        raise ColdStartError(f"{source} has no load times")
    return ColdStarts(f"measured ({len(values)} load times)", sample=tuple(values))


def load_cold_starts(path: Path) -> ColdStarts:
    try:
        with path.open(newline="") as handle:
            return parse_cold_starts(csv.reader(handle), str(path))
    except FileNotFoundError:
        raise ColdStartError(f"no cold-start CSV at {path}") from None
