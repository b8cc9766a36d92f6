"""Spot market scenarios: what the sparsam policy's spot pools face in one run.

A scenario is the number of spot pools and one market (`market.SpotMarket`) that each of them
gets, every pool drawing its own refusal windows, lifetimes and group losses (independent
pools). `standard_scenarios` is the set `benchmarks/capacity.py` runs; the figures behind it
are public measurements of GPU spot markets:

- launches refused 10-80 % of the time depending on the zone; outages of median 10-40 min,
  p90 2-11 h, up to days: here 10 % and 50 % refused, outages of median 1 h and p90 4 h;
- preemption hazards of 0.06-0.74 per node-hour (against about 0.0004 from the Spot Advisor
  band): here 0.2 and 0.5;
- correlated losses (a group of nodes dropping to zero at once): here a node hazard of 0.06
  plus group events at 0.1 per pool-hour that take every node of the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsam.simulate.market import OutageModel, RefusalTrace, SpotMarket
from sparsam.simulate.traces import SimulationError

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class MarketScenario:
    """`spot_pools` spot pools, each with this market. `hazard_per_hour` None: the Spot
    Advisor band's hazard (today's model)."""

    name: str = "advisor"
    spot_pools: int = 1
    hazard_per_hour: float | None = None
    refusals: RefusalTrace | OutageModel | None = None
    group_loss_per_hour: float = 0.0
    group_loss_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.spot_pools <= 26:
            raise SimulationError(f"between 1 and 26 spot pools, not {self.spot_pools}")

    def market(self, advisor_hazard_per_hour: float) -> SpotMarket:
        hazard = self.hazard_per_hour
        return SpotMarket(
            hazard_per_hour=advisor_hazard_per_hour if hazard is None else hazard,
            refusals=self.refusals,
            group_loss_per_hour=self.group_loss_per_hour,
            group_loss_fraction=self.group_loss_fraction,
        )

    def describe(self, advisor_hazard_per_hour: float) -> str:
        market = self.market(advisor_hazard_per_hour)
        source = "the Spot Advisor band" if self.hazard_per_hour is None else "given"
        parts = [
            f"{self.spot_pools} independent spot pool(s)",
            f"hazard {market.hazard_per_hour:.3g}/node-h ({source})",
        ]
        if self.refusals is not None:
            parts.append(self.refusals.describe())
        else:
            parts.append("never refuses")
        if self.group_loss_per_hour > 0:
            parts.append(
                f"group losses {self.group_loss_per_hour:g}/pool-h, each taking "
                f"{self.group_loss_fraction:.0%} of the pool's nodes"
            )
        return "; ".join(parts)


def standard_scenarios() -> list[MarketScenario]:
    """Every scenario the capacity benchmark runs, today's Advisor model first."""
    scenarios = [MarketScenario("advisor")]
    for pools in (1, 3):
        suffix = "1pool" if pools == 1 else f"{pools}pools"
        scenarios += [
            MarketScenario(f"hazard-0.2-{suffix}", pools, hazard_per_hour=0.2),
            MarketScenario(f"hazard-0.5-{suffix}", pools, hazard_per_hour=0.5),
            MarketScenario(
                f"refusal-10pct-{suffix}",
                pools,
                refusals=OutageModel(0.10, HOUR, 4 * HOUR),
            ),
            MarketScenario(
                f"refusal-50pct-{suffix}",
                pools,
                refusals=OutageModel(0.50, HOUR, 4 * HOUR),
            ),
            MarketScenario(
                f"group-loss-{suffix}",
                pools,
                hazard_per_hour=0.06,
                group_loss_per_hour=0.1,
                group_loss_fraction=1.0,
            ),
        ]
    return scenarios


#: Every assumption of the simulated market that favours sparsam (printed by the benchmark).
FAVOURS_SPARSAM: tuple[str, ...] = (
    "a refusal window refuses every launch and an available pool grants every launch: "
    "no partial grants, no capacity limit outside the windows",
    "refusals, the node hazard and group losses are independent: a group loss does not make "
    "the pool refuse the replacements (real reclaims and refusals often come together)",
    "the spot pools are independent of each other (real zones and instance types share outages)",
    "on-demand never refuses and is never preempted (the fallback always works)",
    "the reaction to a refusal is instant: the next plan at the same simulated time (the "
    "controller's next pass comes within its 10 s interval)",
    "checkpoint intervals use the true hazard of the market (the operator needs 24 "
    "node-hours of observation and uses a 0.01/node-h prior before that)",
    "a restart pays the provisioning delay only: no checkpoint load, no warm-up; spot and "
    "on-demand nodes boot equally fast",
    "spot prices are constant (the Advisor's saving), with no price spikes",
    "a refusal CSV trace is available before its first row",
)
