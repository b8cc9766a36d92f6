"""Checkpoint cadence: how often a TrainingJob writes a checkpoint.

Pure: inputs are numbers and frozen dataclasses, the output a frozen `CheckpointInterval` that
the handler copies into `status.checkpointInterval` (`to_status`). No clock, no I/O.

Formulas (seconds throughout):

- **Hazard** `lambda`: preemptions per node-hour of the capacity the job runs on,
  `preemption_rate(preemptions, node_hours)`. With fewer than
  `settings.min_observed_node_hours` of observation the estimate is noise, so the prior for the
  capacity type (`settings.prior_hazard_per_node_hour`, configuration) is used instead and the
  message says so. No observation and no prior (on-demand): nothing interrupts the job.
- **MTBF** of the job: a job is interrupted when any of its `workers` is, so
  `MTBF = 3600 / (lambda * workers)`; infinite when `lambda == 0`.
- **Young/Daly**: `tau = sqrt(2 * C * MTBF)`, `C` the measured checkpoint write time
  (`settings.default_write_seconds` until one has been measured).
- **Lost-work bound** (CostPolicy `checkpoint.maxLostWorkFraction` = f): a preemption loses on
  average half an interval plus the checkpoint being written, `tau / 2 + C`, once per MTBF, so
  the fraction of work lost is `(tau / 2 + C) / MTBF <= f`, i.e. `tau <= 2 * (f * MTBF - C)`.
- **Clamps**: the result is kept within `[settings.min_seconds, settings.max_seconds]`
  (60 s, 1 h by default); the minimum wins over the lost-work bound when the bound cannot be
  met (the message says so). Infinite MTBF (on-demand, no prior) gives the maximum.
- **Fixed** (`spec.checkpoint.interval` is a duration): that duration, unclamped; the inputs
  (C, MTBF) are still computed and reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Final, Literal

from sparsam.api import constants as c
from sparsam.api.trainingjob import CheckpointIntervalStatus, IntervalMode

#: Checkpoint write time assumed until the trainer has measured one (seconds).
DEFAULT_WRITE_SECONDS: Final = 60.0
#: Never checkpoint more often than this (seconds).
MIN_INTERVAL_SECONDS: Final = 60.0
#: Never checkpoint less often than this (seconds): also covers failures other than preemption.
MAX_INTERVAL_SECONDS: Final = 3600.0
#: Below this much observation the observed rate is replaced by the prior (node-hours).
MIN_OBSERVED_NODE_HOURS: Final = 24.0
#: Prior preemptions per node-hour by capacity type (about 1 per 100 spot node-hours: a
#: pessimistic default; configure it from the provider's interruption figures).
DEFAULT_PRIOR_HAZARD: Final[Mapping[str, float]] = MappingProxyType({c.CAPACITY_SPOT: 0.01})

HazardSource = Literal["observed", "prior", "none"]
Limit = Literal["young-daly", "lost-work", "min", "max", "fixed"]


@dataclass(frozen=True, slots=True)
class CheckpointSettings:
    """Operator configuration for the cadence; every default is documented above."""

    default_write_seconds: float = DEFAULT_WRITE_SECONDS
    min_seconds: float = MIN_INTERVAL_SECONDS
    max_seconds: float = MAX_INTERVAL_SECONDS
    min_observed_node_hours: float = MIN_OBSERVED_NODE_HOURS
    prior_hazard_per_node_hour: Mapping[str, float] = field(
        default_factory=lambda: DEFAULT_PRIOR_HAZARD
    )


@dataclass(frozen=True, slots=True)
class Observed:
    """Preemptions seen on the capacity the job runs on, over that many node-hours."""

    preemptions: int
    node_hours: float


@dataclass(frozen=True, slots=True)
class Hazard:
    """Preemptions per node-hour (None: nothing interrupts) and where the figure came from."""

    per_node_hour: float | None
    source: HazardSource


@dataclass(frozen=True, slots=True)
class CheckpointInterval:
    """The chosen interval and what it was computed from."""

    seconds: float
    mode: IntervalMode
    write_seconds: float
    write_measured: bool
    #: The job's mean time between preemptions; None when nothing interrupts it.
    mtbf_seconds: float | None
    hazard: Hazard
    limit: Limit
    message: str

    def to_status(self) -> CheckpointIntervalStatus:
        """status.checkpointInterval (whole seconds, at least 1)."""
        return CheckpointIntervalStatus(
            seconds=max(1, round(self.seconds)),
            mode=self.mode,
            write_seconds=self.write_seconds,
            mean_time_between_preemptions_seconds=self.mtbf_seconds,
            message=self.message,
        )


def preemption_rate(preemptions: int, node_hours: float) -> float | None:
    """Preemptions per node-hour; None when nothing was observed (no node-hours)."""
    if preemptions < 0 or node_hours < 0:
        raise ValueError("preemptions and node-hours cannot be negative")
    if node_hours == 0:
        return None
    return preemptions / node_hours


def estimate_hazard(
    capacity_type: str, observed: Observed | None, settings: CheckpointSettings
) -> Hazard:
    """The observed rate when there is enough observation, else the capacity type's prior,
    else none (on-demand)."""
    if observed is not None and observed.node_hours >= settings.min_observed_node_hours:
        return Hazard(preemption_rate(observed.preemptions, observed.node_hours), "observed")
    prior = settings.prior_hazard_per_node_hour.get(capacity_type)
    if prior is not None:
        return Hazard(prior, "prior")
    if observed is not None and observed.preemptions > 0:
        # Preemptions on capacity without a prior: the little evidence there is beats none.
        return Hazard(preemption_rate(observed.preemptions, observed.node_hours), "observed")
    return Hazard(None, "none")


def mtbf_seconds(hazard_per_node_hour: float | None, workers: int) -> float | None:
    """3600 / (lambda * workers): any worker's preemption interrupts the job. None: never."""
    if hazard_per_node_hour is None or hazard_per_node_hour <= 0 or workers <= 0:
        return None
    mtbf = 3600.0 / (hazard_per_node_hour * workers)
    # A rate so small (a denormal) that the mean time overflows is no interruption at all.
    return mtbf if math.isfinite(mtbf) else None


def young_daly_seconds(write_seconds: float, mtbf: float) -> float:
    """tau = sqrt(2 * C * MTBF)."""
    return math.sqrt(2.0 * write_seconds * mtbf)


def lost_work_bound_seconds(fraction: float, write_seconds: float, mtbf: float) -> float:
    """The largest tau with (tau / 2 + C) / MTBF <= fraction: 2 * (fraction * MTBF - C)."""
    return 2.0 * (fraction * mtbf - write_seconds)


def checkpoint_interval(
    *,
    workers: int,
    hazard: Hazard,
    write_seconds: float | None = None,
    fixed: timedelta | None = None,
    max_lost_work_fraction: float | None = None,
    settings: CheckpointSettings | None = None,
) -> CheckpointInterval:
    """The checkpoint interval of a job of `workers` workers (see the module's formulas).

    `write_seconds`: the measured checkpoint write time, None until measured. `fixed`: the
    spec's duration (mode Fixed), None for `auto`. `max_lost_work_fraction`: the effective
    CostPolicy's bound, None when no policy sets one.
    """
    s = settings if settings is not None else CheckpointSettings()
    measured = write_seconds is not None
    cost = max(0.0, write_seconds) if write_seconds is not None else s.default_write_seconds
    mtbf = mtbf_seconds(hazard.per_node_hour, workers)
    inputs = _describe_inputs(cost, measured, mtbf, hazard, workers)

    if fixed is not None:
        seconds = fixed.total_seconds()
        return CheckpointInterval(
            seconds=seconds,
            mode="Fixed",
            write_seconds=cost,
            write_measured=measured,
            mtbf_seconds=mtbf,
            hazard=hazard,
            limit="fixed",
            message=f"fixed by spec: {_fmt(seconds)}; {inputs}",
        )

    limit: Limit
    if mtbf is None:
        seconds, limit, why = s.max_seconds, "max", "nothing interrupts the job: the maximum"
    else:
        tau = young_daly_seconds(cost, mtbf)
        limit_: Limit = "young-daly"
        why = f"Young/Daly sqrt(2*C*MTBF) = {_fmt(tau)}"
        if max_lost_work_fraction is not None:
            bound = lost_work_bound_seconds(max_lost_work_fraction, cost, mtbf)
            if bound < tau:
                tau, limit_ = bound, "lost-work"
                why += f", bound by maxLostWorkFraction {max_lost_work_fraction:g} to {_fmt(tau)}"
        if tau > s.max_seconds:
            tau, limit_ = s.max_seconds, "max"
            why += ", clamped to the maximum"
        elif tau < s.min_seconds:
            if limit_ == "lost-work":
                why += " (cannot be met)"
            tau, limit_ = s.min_seconds, "min"
            why += ", clamped to the minimum"
        seconds, limit = tau, limit_
    return CheckpointInterval(
        seconds=seconds,
        mode="Auto",
        write_seconds=cost,
        write_measured=measured,
        mtbf_seconds=mtbf,
        hazard=hazard,
        limit=limit,
        message=f"auto: {_fmt(seconds)}: {why}; {inputs}",
    )


def _describe_inputs(
    cost: float, measured: bool, mtbf: float | None, hazard: Hazard, workers: int
) -> str:
    write = f"C={cost:g}s" + ("" if measured else " (default, not yet measured)")
    if mtbf is None:
        return f"{write}, no preemptions expected ({hazard.source})"
    rate = f"{hazard.per_node_hour:.3g}/node-hour"
    source = {"observed": "observed", "prior": "prior: too little observation"}.get(
        hazard.source, hazard.source
    )
    return f"{write}, MTBF={_fmt(mtbf)} ({rate} x {workers} workers, {source})"


def _fmt(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g}h"
    if seconds >= 60:
        return f"{seconds / 60:.3g}m"
    return f"{seconds:.3g}s"
