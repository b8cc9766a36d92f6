"""Spot prices, the preemption hazard and the checkpoint interval, as the simulator uses them.

Conversions (stated here and printed with every run):

- **Price**: the on-demand price of a GPU-hour is 1.0; spot costs `1 - s/100` per GPU-hour, `s`
  being the Spot Advisor's saving in percent. A node costs its GPUs times that, per hour.
- **Interruption band -> monthly probability**: the band's midpoint: 0 (<5 %) -> 2.5 %,
  1 (5-10 %) -> 7.5 %, 2 (10-15 %) -> 12.5 %, 3 (15-20 %) -> 17.5 %; band 4 (>20 %) is open
  ended, so we take 25 % (an assumption; override it with `monthly_probability`).
- **Monthly probability -> hazard**: a node is interrupted at a constant rate
  `lambda = -ln(1 - p) / 730` per hour (730 hours a month), so that P(interrupted within a
  month) = p; its spot lifetime from becoming ready is exponential with that rate.
- **Checkpoint interval**: the operator's own decision,
  `sparsam.decisions.checkpointing.checkpoint_interval` (Young/Daly `tau = sqrt(2 * C * MTBF)`,
  `C` the time one checkpoint takes, MTBF = 1 / (lambda * nodes the job spans), clamped to its
  [60 s, 1 h] defaults; no hazard gives the maximum). A running job does useful
  work for `tau` out of every `tau + C` seconds, so its wall-clock work is
  `runtime * (1 + C / tau)`; a preemption rolls it back to its last checkpoint.
"""

from __future__ import annotations

import math
from typing import Final

from sparsam.decisions.checkpointing import Hazard, checkpoint_interval

HOURS_PER_MONTH: Final = 730.0

#: Monthly interruption probability per Spot Advisor band (band midpoints; band 4 assumed).
BAND_MONTHLY_PROBABILITY: Final[dict[int, float]] = {
    0: 0.025,
    1: 0.075,
    2: 0.125,
    3: 0.175,
    4: 0.25,
}

#: GPUs per instance type: the Spot Advisor gives cores and memory, not GPUs.
GPUS_PER_INSTANCE: Final[dict[str, int]] = {
    "p3.2xlarge": 1,
    "p3.8xlarge": 4,
    "p3.16xlarge": 8,
    "p3dn.24xlarge": 8,
    "p4d.24xlarge": 8,
    "p4de.24xlarge": 8,
    "p5.48xlarge": 8,
    "p5en.48xlarge": 8,
    "g5.12xlarge": 4,
    "g5.48xlarge": 8,
    "g6.48xlarge": 8,
    "g6e.48xlarge": 8,
}


def band_probability(band: int) -> float:
    """The monthly interruption probability we use for a Spot Advisor band."""
    try:
        return BAND_MONTHLY_PROBABILITY[band]
    except KeyError:
        raise ValueError(f"unknown interruption band {band} (expected 0..4)") from None


def hourly_hazard(monthly_probability: float) -> float:
    """lambda per hour such that a node survives a month (730 h) with 1 - p."""
    if not 0.0 <= monthly_probability < 1.0:
        raise ValueError(f"a monthly probability must be in [0, 1), not {monthly_probability}")
    return -math.log1p(-monthly_probability) / HOURS_PER_MONTH


def spot_price(saving_pct: float) -> float:
    """Spot price of a GPU-hour with on-demand = 1."""
    return 1.0 - saving_pct / 100.0


def checkpoint_interval_s(cost_s: float, hazard_per_hour: float, nodes: int) -> float:
    """The operator's auto interval (`decisions.checkpointing.checkpoint_interval`) for a job
    of `nodes` workers on capacity with this known hazard, checkpoints taking `cost_s`."""
    hazard = Hazard(hazard_per_hour if hazard_per_hour > 0 else None, "observed")
    return checkpoint_interval(workers=nodes, hazard=hazard, write_seconds=cost_s).seconds
