"""Spot or on-demand for one training job, given how late it may finish.

Spot is cheap but every preemption of a rigid gang costs the work since its last checkpoint
plus a restart, and a gang of k workers is preempted k times as often as one node. Whether a
job should (re)start on spot therefore depends on its width, the pool's hazard and how much of
its completion-time budget it has already used, not on the price alone:

    slowdown = C / tau + L * (tau + C) / 2 + L * R        (first order in L * tau)

is the expected wall time per second of useful work beyond 1 on spot: C the checkpoint write
time, tau the checkpoint interval, L = k * hazard the gang's preemption rate, R the restart
time (a new node's boot). The first term is the checkpoints themselves, the second the half
period lost on average at a preemption, the third the restart.

`restart_on_spot` is the rule (deadline-aware, as in "Can't Be Late", NSDI '24): a job goes to
spot only while finishing there, at the expected slowdown, still lands within its bound; once a
job's slack is used up it finishes on on-demand, which is never preempted. A job that never
fits (too wide for the hazard) starts on on-demand. Pure: the simulator calls it at every
arrival and restart; the inputs are what the operator observes (the pool's hazard estimate in
`checkpointing`, the checkpoint interval and write time, the job's progress).
"""

from __future__ import annotations

from dataclasses import dataclass

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class SpotOutlook:
    """A job's expected run on spot: `slowdown` as in the module docstring, and the inputs."""

    workers: int
    hazard_per_node_hour: float
    interval_s: float
    write_s: float
    restart_s: float

    @property
    def gang_rate_per_s(self) -> float:
        return max(0, self.workers) * max(0.0, self.hazard_per_node_hour) / HOUR

    @property
    def slowdown(self) -> float:
        rate = self.gang_rate_per_s
        checkpoints = self.write_s / self.interval_s if self.interval_s > 0 else 0.0
        return checkpoints + rate * (self.interval_s + self.write_s) / 2 + rate * self.restart_s


def restart_on_spot(
    *,
    outlook: SpotOutlook,
    elapsed_s: float,
    remaining_s: float,
    bound_s: float,
) -> bool:
    """True: (re)start the job on spot; False: finish it on on-demand.

    `elapsed_s`: since submission (queueing, lost work and restarts included); `remaining_s`:
    useful work still to do; `bound_s`: the completion time the job should meet, from
    submission (e.g. its runtime x (1 + the JCT inflation bound)). Spot while the expected
    finish there, after one restart, is within the bound."""
    if remaining_s <= 0:
        return True
    expected = elapsed_s + outlook.restart_s + remaining_s * (1.0 + outlook.slowdown)
    return expected <= bound_s
