"""Adaptive keep-alive: how long an idle service should keep its last replica before it scales
to zero, learnt from the idle gaps it has seen.

    history = KeepAliveHistory().observe(gap_s)            # after every gap between requests
    keep = choose_keep_alive(history.gaps, cold_start_s)   # seconds, feed to scaleToZeroAfter

Pure: numbers in, a number out. The controller (or the simulator) keeps the history and feeds
the result to `decide_scaling` as `spec.scaling.scale_to_zero_after`, so the scaling rules stay
those of `sparsam.decisions.scaling`.

Why this rule. Keeping an idle replica for T seconds is the ski-rental problem: a gap of g
seconds between requests costs g GPU-seconds if g <= T (the replica waited), and T + C if
g > T (it waited T, scaled to zero, and the next request paid a cold start of C seconds, billed
while the replica boots). The offline optimum, which knows g, pays min(g, C). A fixed T = C is
never worse than 2x that (the classic ski-rental bound) but is 2x on every gap just above C.
Serverless in the Wild (Shahrad et al., ATC'20) learns the gap distribution per application
instead (their hybrid histogram policy); the policy here is its exact empirical form: the T
that minimises the cost the recent gaps would have had,

    cost(T) = sum(g if g <= T else T + C   for g in gaps)

cost(T) is piecewise linear and increasing between consecutive gaps, so its minimum is at
T = 0 or at one of the gaps: sorting the gaps and one pass over prefix sums finds it
(O(n log n)). Ties go to the longest T (same GPU-seconds, fewer cold starts).

`lag_s` is idle time the scaler adds before its own idle clock starts: with an `rps` metric read
as a rate over a window (Prometheus `rate(...[1m])`), `decide_scaling` sees traffic until the
window has emptied, so the replica really stays lag + scaleToZeroAfter after the last request.
The cost is then taken at lag + T, and the T returned is the part the scaler adds on top.
With the operator's default queries there is no lag: the activator's exact last request ends
the rate's residue (`decisions.scaling`, rule 8).

Not wired into the CRD yet: `benchmarks/scale_to_zero.py` evaluates it beside fixed
keep-alives, and it uses less GPU time than the fixed ones but does not cut cold starts.

`cold_start_penalty_s` prices what the bill does not show: a cold start keeps a user waiting.
With a penalty P each cold start costs C + P in the sum above (P = 0: GPU-seconds only, the
default; P = C: a cold start counts twice its boot), which buys fewer cold starts with longer
keep-alives.

Prior: with fewer than `min_gaps` gaps the history says too little, and T = C (the
2-competitive choice) is returned. The result is always clamped to [floor_s, ceiling_s].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_MIN_GAPS",
    "KeepAliveHistory",
    "choose_keep_alive",
    "empirical_cost",
]

#: Gaps remembered: enough for a stable minimiser, few enough that a change of traffic shows
#: within one busy hour; bounded so memory and time per decision stay constant.
DEFAULT_HISTORY: Final = 128
#: Below this many gaps the prior (T = cold start) is used.
DEFAULT_MIN_GAPS: Final = 8
#: Relative slack for "equal cost" when breaking ties towards a longer keep-alive.
_TIE: Final = 1e-9


@dataclass(frozen=True, slots=True)
class KeepAliveHistory:
    """The last `limit` idle gaps in seconds, oldest first (start with `KeepAliveHistory()`)."""

    gaps: tuple[float, ...] = ()
    limit: int = DEFAULT_HISTORY

    def observe(self, gap_s: float) -> KeepAliveHistory:
        """The history with `gap_s` added (negative or non-finite gaps are ignored: a clock
        step backwards or a missing timestamp is not an observation)."""
        if not math.isfinite(gap_s) or gap_s < 0:
            return self
        kept = (*self.gaps, float(gap_s))[-max(1, self.limit) :]
        return KeepAliveHistory(kept, self.limit)


def empirical_cost(
    gaps: Iterable[float],
    keep_alive_s: float,
    cold_start_s: float,
    cold_start_penalty_s: float = 0.0,
) -> float:
    """What the idle gaps cost with a replica kept `keep_alive_s` after each request
    (keep-alive measured from the request, lag included): GPU-seconds, plus the penalty per
    cold start."""
    miss = cold_start_s + cold_start_penalty_s
    return sum(g if g <= keep_alive_s else keep_alive_s + miss for g in gaps)


def choose_keep_alive(
    gaps: Sequence[float],
    cold_start_s: float,
    *,
    lag_s: float = 0.0,
    cold_start_penalty_s: float = 0.0,
    min_gaps: int = DEFAULT_MIN_GAPS,
    floor_s: float = 0.0,
    ceiling_s: float = 3600.0,
) -> float:
    """The keep-alive in seconds (what the scaler adds after its idle clock starts) that
    minimises the empirical cost of `gaps`; the prior T = `cold_start_s` with fewer than
    `min_gaps` gaps. Clamped to [floor_s, ceiling_s]."""
    if min(cold_start_s, lag_s, cold_start_penalty_s, floor_s) < 0 or ceiling_s < floor_s:
        raise ValueError(
            f"keep-alive bounds: cold_start={cold_start_s}, lag={lag_s},"
            f" penalty={cold_start_penalty_s}, floor={floor_s}, ceiling={ceiling_s}"
        )
    valid = sorted(g for g in gaps if math.isfinite(g) and g >= 0)
    if len(valid) < max(1, min_gaps):
        return _clamp(cold_start_s, floor_s, ceiling_s)
    # Total keep-alive K = lag + T; K can be no shorter than the lag nor the floor, and no
    # longer than lag + ceiling. Candidates: the lowest K, and every gap within range.
    low, high = lag_s + floor_s, lag_s + ceiling_s
    n = len(valid)
    best_k, best_cost = low, math.inf
    kept_sum = 0.0  # sum of the gaps <= K so far
    i = 0
    candidates = [low, *(g for g in valid if low < g <= high)]
    for k in candidates:
        while i < n and valid[i] <= k:
            kept_sum += valid[i]
            i += 1
        cost = kept_sum + (n - i) * (k + cold_start_s + cold_start_penalty_s)
        if cost <= best_cost * (1 + _TIE) + _TIE:
            best_k, best_cost = k, min(cost, best_cost)
    keep = best_k - lag_s
    # lag + (k - lag) can come out an ulp short of k, and the gap of exactly k that it was
    # chosen for would then miss it.
    while lag_s + keep < best_k:
        keep = math.nextafter(keep, math.inf)
    return _clamp(keep, floor_s, ceiling_s)


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))
