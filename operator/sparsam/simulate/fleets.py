"""Synthetic fleets of LLM services for the scale-to-zero replay: seeded, documented, small.

    bursty = bursty_fleet(BurstyFleet(), seed=0)       # list of services, each a request list
    periodic = periodic_fleet(PeriodicFleet(), seed=0)

Every request's tokens are drawn like the Azure LLM conversation trace's (log-normal context,
median about 760 tokens, and generated tokens, median about 150: the trace's log means and
spreads), so a request occupies a replica about as long as a real one does.

**Bursty** (`BurstyFleet`): each service alternates idle gaps and bursts. A burst is a run of
requests (1 + a geometric count, mean `burst_mean` = 20, at most `burst_max`) arriving at
exponential gaps of mean `in_burst_gap_s`; the idle gap before the next burst is exponential
with mean `idle_mean_s * i^zipf_s` for service i (1-based), capped at `idle_max_s` (10 min):
per-service rates follow a Zipf law, and no idle gap exceeds several minutes (the cap
flattens the law's tail: the quietest services all idle about as long). With the defaults
about 73 % of the fleet's seconds have no request (`idle_fraction` reports the figure), the
statistic of a bursty production LLM trace this fleet stands in for.

**Periodic** (`PeriodicFleet`): service i is called every `periods_min[i % len]` minutes from
a random phase, each call `calls` requests a second apart, with normal jitter of
`jitter_s` seconds on each call time: batch jobs, health probes and cron-driven pipelines.
A policy that learns the period can pre-warm; a keep-alive shorter than it cold-starts every
call.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sparsam.simulate.serving import Request

__all__ = ["BurstyFleet", "PeriodicFleet", "bursty_fleet", "idle_fraction", "periodic_fleet"]

#: Log mean and spread of the Azure LLM conversation trace's context and generated tokens.
_CONTEXT_LOG = (6.63, 0.99)
_GENERATED_LOG = (5.02, 0.86)


def _request(rng: random.Random, at: float) -> Request:
    context = min(32_000, max(1, round(rng.lognormvariate(*_CONTEXT_LOG))))
    generated = min(4_000, max(1, round(rng.lognormvariate(*_GENERATED_LOG))))
    return Request(at, context, generated)


@dataclass(frozen=True, slots=True)
class BurstyFleet:
    services: int = 10
    horizon_s: float = 3600.0
    zipf_s: float = 1.0
    idle_mean_s: float = 300.0
    idle_max_s: float = 600.0
    burst_mean: float = 20.0
    burst_max: int = 120
    in_burst_gap_s: float = 1.5


def bursty_fleet(shape: BurstyFleet, seed: int = 0) -> list[list[Request]]:
    """One sorted request list per service (module docstring)."""
    if shape.services < 1 or shape.horizon_s <= 0:
        raise ValueError(f"a fleet needs services >= 1 and a horizon > 0: {shape}")
    rng = random.Random(seed)  # noqa: S311 - a seeded workload, not cryptography
    fleet: list[list[Request]] = []
    for i in range(1, shape.services + 1):
        mean_idle = shape.idle_mean_s * i**shape.zipf_s
        stream: list[Request] = []
        t = rng.uniform(0.0, min(shape.idle_max_s, mean_idle))
        while t < shape.horizon_s:
            # 1 + geometric(p) has mean 1/p.
            p = 1.0 / shape.burst_mean
            count = 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))
            for _ in range(min(count, shape.burst_max)):
                if t >= shape.horizon_s:
                    break
                stream.append(_request(rng, t))
                t += rng.expovariate(1.0 / shape.in_burst_gap_s)
            t += min(shape.idle_max_s, rng.expovariate(1.0 / mean_idle))
        fleet.append(stream)
    return fleet


@dataclass(frozen=True, slots=True)
class PeriodicFleet:
    services: int = 12
    horizon_s: float = 3600.0
    periods_min: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 10.0, 15.0)
    jitter_s: float = 5.0
    calls: int = 2


def periodic_fleet(shape: PeriodicFleet, seed: int = 0) -> list[list[Request]]:
    """One sorted request list per service (module docstring)."""
    if shape.services < 1 or shape.horizon_s <= 0 or not shape.periods_min:
        raise ValueError(f"a fleet needs services >= 1, a horizon > 0 and periods: {shape}")
    rng = random.Random(seed)  # noqa: S311 - a seeded workload, not cryptography
    fleet: list[list[Request]] = []
    for i in range(shape.services):
        period = 60.0 * shape.periods_min[i % len(shape.periods_min)]
        stream: list[Request] = []
        call = rng.uniform(0.0, period)
        while call < shape.horizon_s:
            at = max(0.0, call + rng.gauss(0.0, shape.jitter_s))
            stream.extend(_request(rng, at + k) for k in range(shape.calls))
            call += period
        stream.sort(key=lambda r: r.arrival_s)
        fleet.append(stream)
    return fleet


def idle_fraction(fleet: Sequence[Sequence[Request]], horizon_s: float) -> float:
    """The share of whole seconds in [0, horizon_s) in which no service of the fleet got a
    request."""
    seconds = math.ceil(horizon_s)
    if seconds <= 0:
        return 0.0
    busy = {int(r.arrival_s) for service in fleet for r in service if 0 <= r.arrival_s < seconds}
    return 1.0 - len(busy) / seconds
