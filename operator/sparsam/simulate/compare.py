"""One run of `sparsam simulate`: load the traces, build the three policies, replay the trace
under each through the planner, and gather metrics, the table, the plot and the JSON summary.

Mappings and conversions (printed in `assumptions()` with every run):

- a Philly job (num_gpus, runtime in minutes, submitted_time) becomes ceil(gpus / gpus per
  node) worker pods (full nodes, then one pod with the rest), submitted at its submitted_time
  and needing all its pods to run (rigid: min = max workers) for `runtime` minutes of work;
- prices, hazard and checkpoint interval: see `sparsam.simulate.spot`;
- the spot market (hazard, refusals, group losses; `sparsam.simulate.market`) is a
  `MarketScenario` (`sparsam.simulate.scenarios`; default: today's Spot Advisor band, one pool
  that never refuses);
- the spot market and checkpointing apply to the sparsam policy only: the on-demand policies
  are never preempted, never refused, and pay no checkpoint overhead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from sparsam.decisions.capacity import PlannerSettings
from sparsam.simulate.engine import Outcome, World, simulate
from sparsam.simulate.policies import peak_demand, spot_pool_names, three_policies
from sparsam.simulate.report import (
    Metrics,
    floor_cost,
    markdown_table,
    metrics,
    plot,
    summary_json,
)
from sparsam.simulate.scenarios import MarketScenario
from sparsam.simulate.spot import (
    GPUS_PER_INSTANCE,
    band_probability,
    hourly_hazard,
    spot_price,
)
from sparsam.simulate.traces import (
    PHILLY_FILE,
    SPOT_ADVISOR_FILE,
    Job,
    SimulationError,
    SpotOffer,
    TraceError,
    default_trace_dir,
    load_philly,
    load_spot_advisor,
)

#: sparsam's targets (benchmarks/capacity.py checks them).
TARGETS: dict[str, tuple[str, float]] = {
    "cost_vs_static": ("<=", 0.25),
    "allocation_utilization": (">=", 0.85),
    "jct_inflation_p95": ("<=", 0.10),
    "floor_gap": ("<=", 1.25),
}


#: The deadline-aware policy's budget (`World.spot_deadline`): spot while on-demand could still
#: finish the job within its runtime x 1.14 after one more likely loss (the benchmark bounds the
#: p95 JCT inflation at 15 %: 0.15 met it with nothing to spare at hazard 0.5, 0.13 cost 0.555).
SPOT_DEADLINE = 0.14
#: No spot pool holds more than half of the spot nodes (with 3 pools: spread evenly).
SPOT_POOL_MAX_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Settings:
    """One run's knobs; the defaults are `sparsam simulate`'s."""

    #: The Philly jobs file.
    trace: Path = field(default_factory=lambda: default_trace_dir() / PHILLY_FILE)
    #: The AWS Spot Advisor snapshot.
    spot_advisor: Path = field(default_factory=lambda: default_trace_dir() / SPOT_ADVISOR_FILE)
    max_jobs: int | None = None
    seed: int = 0
    region: str = "us-east-1"
    instance_type: str = "p4d.24xlarge"
    gpus_per_node: int | None = None
    provisioning_delay: timedelta = timedelta(minutes=2)
    checkpoint_cost: timedelta = timedelta(minutes=1)
    sparsam_scale_down: timedelta = timedelta(minutes=10)
    #: Overrides the band's monthly interruption probability.
    monthly_interruption: float | None = None
    #: The sparsam policy's spot market (default: the Advisor band, one pool, no refusals).
    market: MarketScenario = field(default_factory=MarketScenario)
    #: The sparsam policy's JCT inflation budget for spot (`World.spot_deadline`); None: the
    #: previous policy (spot whenever available, one checkpoint cadence everywhere).
    spot_deadline: float | None = SPOT_DEADLINE
    #: The sparsam policy's `PlannerSettings.spot_pool_max_share` (1.0: the previous policy,
    #: the first spot pool takes every node unless it refuses).
    spot_pool_max_share: float = SPOT_POOL_MAX_SHARE

    def planner(self) -> PlannerSettings:
        """The sparsam policy's planner settings: the deadline-aware policy also gives
        Prefer-spot pods new spot nodes before free room on on-demand nodes."""
        return PlannerSettings(
            spot_pool_max_share=self.spot_pool_max_share,
            new_spot_before_on_demand_room=self.spot_deadline is not None,
        )


@dataclass(slots=True)
class Result:
    settings: Settings
    jobs: int
    trace_gpu_hours: float
    peak_gpus: int
    offer: SpotOffer
    gpus_per_node: int
    monthly_probability: float
    hazard_per_hour: float
    spot_price: float
    floor: float
    outcomes: list[Outcome]
    rows: list[Metrics]
    wall_s: float
    plot_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def by_policy(self) -> dict[str, Metrics]:
        return {row.policy: row for row in self.rows}

    def targets(self) -> dict[str, dict[str, Any]]:
        sparsam = self.by_policy()["sparsam"]
        checks: dict[str, dict[str, Any]] = {}
        for name, (op, bound) in TARGETS.items():
            value = float(getattr(sparsam, name))
            met = value <= bound if op == "<=" else value >= bound
            checks[name] = {"target": f"{op} {bound}", "value": round(value, 4), "met": met}
        return checks

    def summary(self) -> dict[str, Any]:
        s = self.settings
        return {
            "trace": self.settings.trace.name,
            "jobs": self.jobs,
            "trace_gpu_hours": round(self.trace_gpu_hours, 1),
            "peak_gpus": self.peak_gpus,
            "seed": s.seed,
            "instance": {
                "region": self.offer.region,
                "type": self.offer.instance_type,
                "gpus_per_node": self.gpus_per_node,
                "spot_saving_pct": self.offer.saving_pct,
                "interruption_band": self.offer.band,
                "band_label": self.offer.band_label,
            },
            "monthly_interruption_probability": self.monthly_probability,
            "hazard_per_node_hour": self.hazard_per_hour,
            "spot_price_per_gpu_hour": round(self.spot_price, 4),
            "provisioning_delay_s": s.provisioning_delay.total_seconds(),
            "checkpoint_cost_s": s.checkpoint_cost.total_seconds(),
            "sparsam_scale_down_after_s": s.sparsam_scale_down.total_seconds(),
            "floor": round(self.floor, 3),
            "market": {
                "scenario": s.market.name,
                "description": s.market.describe(self.hazard_per_hour),
                "pools": pool_report(self.outcomes[-1]),
            },
            "policies": {row.policy: row.as_dict() for row in self.rows},
            "targets": self.targets(),
            "plot": None if self.plot_path is None else str(self.plot_path),
            "wall_s": round(self.wall_s, 2),
        }

    def table(self) -> str:
        return markdown_table(self.rows, self.floor)

    def assumptions(self) -> str:
        s = self.settings
        return "\n".join(
            [
                f"- trace: {self.jobs} Philly jobs, {self.trace_gpu_hours:,.0f} GPU-hours, "
                f"peak demand {self.peak_gpus} GPUs",
                f"- nodes: {self.offer.instance_type} ({self.gpus_per_node} GPUs), "
                f"{self.offer.region} Linux; a job of g GPUs = ceil(g/{self.gpus_per_node}) "
                f"worker pods (full nodes, then the rest), all needed to run (rigid)",
                f"- prices: on-demand GPU-hour = 1; spot = 1 - s/100 = "
                f"1 - {self.offer.saving_pct}/100 = {self.spot_price:.2f}",
                f"- preemption: band {self.offer.band} ({self.offer.band_label}) -> monthly "
                f"probability p = {self.monthly_probability:.3f} (band midpoint; >20% taken as "
                f"25%) -> hazard lambda = -ln(1-p)/730 = {self.hazard_per_hour:.3g} per "
                f"node-hour, exponential spot lifetimes from node ready (seed {s.seed})",
                f"- spot market ({s.market.name}): "
                f"{s.market.describe(self.hazard_per_hour)}; a refused launch raises "
                "InsufficientCapacity and the pool is refused for the controller's 3 min TTL "
                "(Prefer pods go to another spot pool, then on-demand); on-demand never "
                "refuses",
                f"- checkpoints (sparsam only): Young/Daly tau = sqrt(2*C*MTBF), "
                f"C = {s.checkpoint_cost.total_seconds():.0f}s, MTBF = 1/(lambda*pods), "
                "clamped to [60s, 1h] (the operator's decisions.checkpointing); "
                "wall work = runtime*(1+C/tau); a preemption loses the work since the last "
                "checkpoint and the job restarts from it once all its pods are placed again",
                f"- provisioning delay {s.provisioning_delay.total_seconds():.0f}s (paid); "
                "static nodes ready from the start; reactive: on-demand pool, scaleDownAfter "
                f"10m; sparsam: spot pool (Prefer) + on-demand fallback, scaleDownAfter "
                f"{s.sparsam_scale_down.total_seconds() / 60:g}m; all three are the same "
                "planner (decisions.capacity.plan_capacity/apply_plan)",
                f"- floor = trace GPU-hours x cheapest price = {self.floor:,.1f}",
            ]
        )

    def markdown(self) -> str:
        """What `sparsam simulate` prints before its JSON line: how the trace was mapped, the
        table, and where the plot is."""
        plot_line = (
            f"plot: {self.plot_path}"
            if self.plot_path is not None
            else "plot: not written (matplotlib is missing: pip install 'sparsam[simulate]')"
        )
        return "\n\n".join(
            [
                f"## sparsam simulate: {self.jobs} jobs, 3 policies, one run ({self.wall_s:.1f}s)",
                self.assumptions(),
                self.table(),
                plot_line,
            ]
        )

    def json_line(self) -> str:
        return summary_json(self.summary())


def write_outputs(result: Result, out_dir: Path) -> None:
    """The table and the JSON summary beside the plot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text(result.markdown() + "\n")
    (out_dir / "summary.json").write_text(result.json_line() + "\n")


def compare(settings: Settings, out_dir: Path | None = None) -> Result:
    """Replay the trace under static, reactive and sparsam; write the plot to `out_dir`."""
    started = time.perf_counter()
    jobs = load_philly(settings.trace, settings.max_jobs)
    if not jobs:
        raise TraceError(f"{settings.trace} has no jobs")
    offer = load_spot_advisor(settings.spot_advisor, settings.region, settings.instance_type)
    gpus_per_node = settings.gpus_per_node or GPUS_PER_INSTANCE.get(settings.instance_type)
    if not gpus_per_node:
        raise TraceError(
            f"how many GPUs has {settings.instance_type}? pass --gpus-per-node "
            f"(known: {', '.join(sorted(GPUS_PER_INSTANCE))})"
        )
    return compare_jobs(jobs, offer, gpus_per_node, settings, out_dir, started)


def compare_jobs(
    jobs: list[Job],
    offer: SpotOffer,
    gpus_per_node: int,
    settings: Settings,
    out_dir: Path | None = None,
    started: float | None = None,
) -> Result:
    started = time.perf_counter() if started is None else started
    timeout = PlannerSettings().provisioning_timeout
    if not timedelta(0) <= settings.provisioning_delay < timeout:
        raise SimulationError(
            f"the provisioning delay must be at least 0 and below the planner's provisioning "
            f"timeout ({timeout}), not {settings.provisioning_delay}"
        )
    try:
        probability = (
            settings.monthly_interruption
            if settings.monthly_interruption is not None
            else band_probability(offer.band)
        )
        hazard = hourly_hazard(probability)
    except ValueError as exc:
        raise SimulationError(str(exc)) from exc
    price = spot_price(offer.saving_pct)
    policies = three_policies(
        jobs,
        gpus_per_node,
        price,
        sparsam_scale_down=settings.sparsam_scale_down,
        spot_pools=settings.market.spot_pools,
        planner=settings.planner(),
    )
    on_demand = World(
        provisioning_delay_s=settings.provisioning_delay.total_seconds(),
        spot_hazard_per_hour=0.0,
        checkpoint_cost_s=0.0,
        seed=settings.seed,
    )
    with_spot = market_world(settings, settings.market, hazard, settings.seed)
    outcomes = [
        simulate(jobs, policy, with_spot if policy.name == "sparsam" else on_demand)
        for policy in policies
    ]
    gpu_seconds = sum(job.gpu_seconds for job in jobs)
    floor = floor_cost(gpu_seconds, min(price, 1.0))
    static_cost = outcomes[0].cost
    rows = [metrics(outcome, static_cost, floor) for outcome in outcomes]
    result = Result(
        settings=settings,
        jobs=len(jobs),
        trace_gpu_hours=gpu_seconds / 3600,
        peak_gpus=peak_demand(jobs),
        offer=offer,
        gpus_per_node=gpus_per_node,
        monthly_probability=probability,
        hazard_per_hour=hazard,
        spot_price=price,
        floor=floor,
        outcomes=outcomes,
        rows=rows,
        wall_s=0.0,
    )
    if out_dir is not None:
        result.plot_path = plot(outcomes, out_dir / "capacity.png")
    result.wall_s = time.perf_counter() - started
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result


def sparsam_variant(
    result: Result,
    *,
    scale_down: timedelta | None = None,
    monthly_interruption: float | None = None,
    seed: int | None = None,
) -> Metrics:
    """Re-run only the sparsam policy of `result` with one setting changed (a sensitivity
    check), measured against the same static pool and floor."""
    jobs = [run.job for run in result.outcomes[0].jobs]
    settings = result.settings
    probability = (
        monthly_interruption if monthly_interruption is not None else result.monthly_probability
    )
    sparsam = three_policies(
        jobs,
        result.gpus_per_node,
        result.spot_price,
        sparsam_scale_down=scale_down or settings.sparsam_scale_down,
    )[2]
    world = World(
        provisioning_delay_s=settings.provisioning_delay.total_seconds(),
        spot_hazard_per_hour=hourly_hazard(probability),
        checkpoint_cost_s=settings.checkpoint_cost.total_seconds(),
        seed=settings.seed if seed is None else seed,
        spot_deadline=settings.spot_deadline,
    )
    outcome = simulate(jobs, sparsam, world)
    return metrics(outcome, result.outcomes[0].cost, result.floor)


def market_world(
    settings: Settings, scenario: MarketScenario, advisor_hazard: float, seed: int
) -> World:
    """The world of the sparsam policy: every spot pool with the scenario's market."""
    market = scenario.market(advisor_hazard)
    return World(
        provisioning_delay_s=settings.provisioning_delay.total_seconds(),
        spot_hazard_per_hour=market.hazard_per_hour,
        checkpoint_cost_s=settings.checkpoint_cost.total_seconds(),
        seed=seed,
        markets={name: market for name in spot_pool_names(scenario.spot_pools)},
        spot_deadline=settings.spot_deadline,
    )


@dataclass(frozen=True, slots=True)
class MarketBase:
    """What a re-run of the sparsam policy against another spot market needs from a full run:
    small and picklable, so scenarios can run in other processes."""

    jobs: tuple[Job, ...]
    settings: Settings
    gpus_per_node: int
    spot_price: float
    advisor_hazard: float
    static_cost: float
    floor: float

    @classmethod
    def of(cls, result: Result) -> MarketBase:
        return cls(
            tuple(run.job for run in result.outcomes[0].jobs),
            result.settings,
            result.gpus_per_node,
            result.spot_price,
            result.hazard_per_hour,
            result.outcomes[0].cost,
            result.floor,
        )


@dataclass(frozen=True, slots=True)
class MarketRun:
    """The sparsam policy against one market: its metrics and what each pool did."""

    scenario: str
    metrics: Metrics
    pools: dict[str, dict[str, Any]]


def run_market(
    base: MarketBase,
    scenario: MarketScenario,
    seed: int | None = None,
    *,
    previous_policy: bool = False,
) -> MarketRun:
    """Re-run only the sparsam policy against `scenario`'s spot market, measured against the
    same static pool and floor (the on-demand policies see no spot market). `previous_policy`:
    the policy before the deadline-aware one (`Settings.spot_deadline` None), as a baseline."""
    jobs = list(base.jobs)
    settings = base.settings
    if previous_policy:
        settings = replace(settings, spot_deadline=None, spot_pool_max_share=1.0)
    sparsam = three_policies(
        jobs,
        base.gpus_per_node,
        base.spot_price,
        sparsam_scale_down=settings.sparsam_scale_down,
        spot_pools=scenario.spot_pools,
        planner=settings.planner(),
    )[2]
    world = market_world(
        settings, scenario, base.advisor_hazard, settings.seed if seed is None else seed
    )
    outcome = simulate(jobs, sparsam, world)
    return MarketRun(
        scenario.name, metrics(outcome, base.static_cost, base.floor), pool_report(outcome)
    )


def pool_report(outcome: Outcome) -> dict[str, dict[str, Any]]:
    """Per pool: nodes launched, node-hours, cost, preemptions, group losses, refusals."""
    return {
        name: {
            "spot": stats.spot,
            "launched": stats.launched,
            "node_hours": round(stats.node_hours, 2),
            "cost": round(stats.cost, 3),
            "preemptions": stats.preemptions,
            "group_losses": stats.group_losses,
            "refusals": stats.refusals,
            "refused_nodes": stats.refused_nodes,
            "refused_time_fraction": round(stats.refused_time_fraction, 4),
        }
        for name, stats in outcome.pools.items()
    }
