"""Spot or on-demand for one training job, given how late it may finish.

Spot is cheap, but each preemption of a rigid gang costs the work since its last checkpoint
plus a restart, and checkpointing often enough for a high hazard costs time too; a gang of k
workers is preempted k times as often as one node. The expected slowdown on spot

    slowdown = C / tau + L * (tau + C) / 2 + L * R        (first order in L * tau)

(C the checkpoint write time, tau the interval, L = k * hazard the gang's preemption rate, R the
restart time) reaches 15 % for one node at 0.5 preemptions per node-hour, so a completion-time
bound cannot be met by running on spot throughout, nor by a rule on the expected value alone.

The rule here is deadline-aware, as in "Can't Be Late" (NSDI '24): a job runs on spot while it
could still switch to on-demand (never preempted) and finish within its bound even if it lost
one more full checkpoint period and paid one more restart first, that loss weighted by the
chance that the rest of its run on spot sees a preemption at all:

    elapsed + R + remaining * on_demand_factor + (1 - exp(-L * T)) * (tau + R) <= bound

(T the rest of the run on spot, remaining x spot_factor; at the Spot Advisor's hazards the
reserve is nearly 0, at 0.5 per node-hour it is a whole period for any job over a few hours)

(`spot_is_safe`). At arrival and at every restart the job goes to spot only if that holds;
while it runs on spot its slack erodes at the difference between the two capacities' checkpoint
overheads, and `spot_until_s` says when the job must move to on-demand, at a fresh checkpoint,
if no preemption has made it go earlier. Short jobs (whose slack is smaller than one period and a
restart) start on on-demand; long ones spend their slack on spot. Pure: the simulator calls it
at every arrival and start; its inputs are what the operator knows (the pool's hazard estimate
and the interval from `checkpointing`, the checkpoint write time, the job's progress).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class SpotOutlook:
    """A job's run on spot: its width, the pool's hazard, the checkpoint interval on spot and
    on on-demand (seconds of useful work; inf: no checkpoints), the write time and the restart
    time (a new node's boot)."""

    workers: int
    hazard_per_node_hour: float
    interval_s: float
    write_s: float
    restart_s: float
    on_demand_interval_s: float = math.inf

    @property
    def gang_rate_per_s(self) -> float:
        return max(0, self.workers) * max(0.0, self.hazard_per_node_hour) / HOUR

    @property
    def spot_factor(self) -> float:
        """Wall seconds per second of useful work on spot without preemptions."""
        return _factor(self.write_s, self.interval_s)

    @property
    def on_demand_factor(self) -> float:
        """Wall seconds per second of useful work on on-demand."""
        return _factor(self.write_s, self.on_demand_interval_s)

    @property
    def slowdown(self) -> float:
        """Expected extra wall time per second of useful work on spot (module docstring)."""
        rate = self.gang_rate_per_s
        period = self.interval_s + self.write_s if math.isfinite(self.interval_s) else 0.0
        return self.spot_factor - 1.0 + rate * period / 2 + rate * self.restart_s


def _factor(write_s: float, interval_s: float) -> float:
    if not math.isfinite(interval_s) or interval_s <= 0:
        return 1.0
    return 1.0 + write_s / interval_s


def spot_is_safe(
    *, outlook: SpotOutlook, elapsed_s: float, remaining_s: float, bound_s: float
) -> bool:
    """True: the job may (re)start on spot; False: it finishes on on-demand.

    `elapsed_s`: since submission (queueing, lost work and restarts included); `remaining_s`:
    useful work still to do; `bound_s`: the completion time to meet, from submission (e.g. the
    runtime x (1 + a JCT inflation budget)). A job with nothing left to do may go anywhere."""
    if remaining_s <= 0:
        return True
    return _slack(outlook, elapsed_s, remaining_s, bound_s) >= 0


def spot_until_s(
    *, outlook: SpotOutlook, elapsed_s: float, remaining_s: float, bound_s: float
) -> float:
    """Seconds the job, starting on spot now, may run there before it must move to on-demand
    (at a fresh checkpoint) to stay within its bound: 0 if it should not start on spot, inf if
    its slack does not erode (spot checkpoints cost no more than on-demand's)."""
    slack = _slack(outlook, elapsed_s, remaining_s, bound_s)
    if slack < 0:
        return 0.0
    # Per second on spot: one second elapses, 1 / spot_factor of work is done, saving
    # on_demand_factor / spot_factor of the time on-demand would have needed.
    erosion = 1.0 - outlook.on_demand_factor / outlook.spot_factor
    return math.inf if erosion <= 0 else slack / erosion


def _slack(outlook: SpotOutlook, elapsed_s: float, remaining_s: float, bound_s: float) -> float:
    remaining = max(0.0, remaining_s)
    period = outlook.interval_s if math.isfinite(outlook.interval_s) else 0.0
    # The chance that the rest of the run on spot sees at least one preemption.
    hit = 1.0 - math.exp(-outlook.gang_rate_per_s * remaining * outlook.spot_factor)
    reserve = hit * (period + outlook.restart_s)
    on_demand = outlook.restart_s + remaining * outlook.on_demand_factor
    return bound_s - elapsed_s - on_demand - reserve
