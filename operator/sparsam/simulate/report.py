"""Metrics of a simulated run, the markdown table, the JSON summary and the plot.

Definitions:

- **cost**: sum over nodes of pricePerHour x hours from creation to removal (or preemption,
  or the last job's completion); on-demand GPU-hour = 1. `cost_vs_static` divides by the
  static pool's cost from the same run.
- **allocation utilization**: GPU-seconds requested by pods bound to ready nodes / GPU-seconds
  of every node that exists (booting nodes included: they are paid for).
- **JCT inflation**: per job, (completion - submission) / trace runtime - 1; queueing,
  provisioning, checkpoint overhead and re-runs after preemption all count. The mean is over
  finished jobs; the p95 (nearest rank) is over every job, a dropped job counting as
  infinitely late (so dropping work can never improve it).
- **jobs dropped**: jobs that never finished (the engine's horizon, or nothing left to happen).
- **preemptions**: spot nodes reclaimed (by the hazard or by group losses); `job_interruptions`:
  jobs hit by one; `lost_gpu_hours`: GPU-hours of work rolled back to the last checkpoint;
  `refusals`: launches a spot pool refused (InsufficientCapacity); `group_losses`: group
  events that took at least one node.
- **floor**: the trace's GPU-seconds x the cheapest price per GPU-hour (spot), i.e. a
  perfectly packed, never-idle, never-preempted spot cluster; `floor_gap` = cost / floor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsam.simulate.engine import Outcome


@dataclass(frozen=True, slots=True)
class Metrics:
    policy: str
    cost: float
    cost_vs_static: float
    allocation_utilization: float
    jct_inflation_mean: float
    jct_inflation_p95: float
    preemptions: int
    job_interruptions: int
    lost_gpu_hours: float
    floor_gap: float
    makespan_hours: float
    plans: int
    jobs_dropped: int = 0
    refusals: int = 0
    group_losses: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "cost": round(self.cost, 3),
            "cost_vs_static": round(self.cost_vs_static, 4),
            "allocation_utilization": round(self.allocation_utilization, 4),
            "jct_inflation_mean": round(self.jct_inflation_mean, 4),
            "jct_inflation_p95": round(self.jct_inflation_p95, 4),
            "preemptions": self.preemptions,
            "job_interruptions": self.job_interruptions,
            "lost_gpu_hours": round(self.lost_gpu_hours, 3),
            "floor_gap": round(self.floor_gap, 4),
            "makespan_hours": round(self.makespan_hours, 2),
            "plans": self.plans,
            "jobs_dropped": self.jobs_dropped,
            "refusals": self.refusals,
            "group_losses": self.group_losses,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def floor_cost(gpu_seconds: float, cheapest_price_per_gpu_hour: float) -> float:
    return gpu_seconds / 3600 * cheapest_price_per_gpu_hour


def metrics(outcome: Outcome, static_cost: float, floor: float) -> Metrics:
    inflation = [
        (run.finished - run.job.submit_s) / run.job.runtime_s - 1.0
        for run in outcome.jobs
        if run.finished is not None
    ]
    dropped = [math.inf for run in outcome.jobs if run.finished is None]
    start = min((run.job.submit_s for run in outcome.jobs), default=0.0)
    return Metrics(
        policy=outcome.policy,
        cost=outcome.cost,
        cost_vs_static=outcome.cost / static_cost if static_cost > 0 else math.nan,
        allocation_utilization=(
            outcome.allocated_gpu_s / outcome.provisioned_gpu_s
            if outcome.provisioned_gpu_s > 0
            else 0.0
        ),
        jct_inflation_mean=sum(inflation) / len(inflation) if inflation else 0.0,
        jct_inflation_p95=percentile(inflation + dropped, 95),
        preemptions=outcome.node_preemptions,
        job_interruptions=sum(run.interruptions for run in outcome.jobs),
        lost_gpu_hours=sum(run.lost_s * run.job.gpus for run in outcome.jobs) / 3600,
        floor_gap=outcome.cost / floor if floor > 0 else math.nan,
        makespan_hours=(outcome.end_s - start) / 3600,
        plans=outcome.plans,
        jobs_dropped=len(dropped),
        refusals=outcome.refusals,
        group_losses=outcome.group_losses,
    )


COLUMNS = (
    ("policy", "policy", "{}"),
    ("cost", "cost (on-demand GPU-h = 1)", "{:,.1f}"),
    ("cost_vs_static", "cost / static", "{:.3f}"),
    ("floor_gap", "cost / floor", "{:.2f}"),
    ("allocation_utilization", "GPU alloc. util.", "{:.1%}"),
    ("jct_inflation_mean", "JCT infl. mean", "{:.1%}"),
    ("jct_inflation_p95", "JCT infl. p95", "{:.1%}"),
    ("preemptions", "preemptions", "{}"),
    ("lost_gpu_hours", "lost GPU-h", "{:,.1f}"),
    ("jobs_dropped", "jobs dropped", "{}"),
)


def markdown_table(rows: Sequence[Metrics], floor: float) -> str:
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        cells = [fmt.format(getattr(row, attr)) for attr, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| floor | " + f"{floor:,.1f} | | 1.00 |" + " |" * (len(COLUMNS) - 4))
    return "\n".join(lines)


def summary_json(payload: Mapping[str, Any]) -> str:
    """One line, no NaN (JSON has none): NaN becomes null."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(payload), sort_keys=False, separators=(",", ":"))


def demand_curve(outcomes: Sequence[Outcome]) -> tuple[list[float], list[int]]:
    """The trace's demanded GPUs over time (every job running from submission for its
    runtime), as a step function: (times in seconds, GPUs from that time on)."""
    if not outcomes:
        return [], []
    edges: list[tuple[float, int]] = []
    for run in outcomes[0].jobs:
        edges.append((run.job.submit_s, run.job.gpus))
        edges.append((run.job.submit_s + run.job.runtime_s, -run.job.gpus))
    edges.sort()
    times: list[float] = []
    levels: list[int] = []
    level = 0
    for t, delta in edges:
        level += delta
        if times and times[-1] == t:
            levels[-1] = level
        else:
            times.append(t)
            levels.append(level)
    return times, levels


def plot(outcomes: Sequence[Outcome], path: Path) -> Path | None:
    """Provisioned GPUs per policy against the trace's demand, and cumulative cost per policy.
    Returns None when matplotlib is not installed (`pip install sparsam[simulate]`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    times, levels = demand_curve(outcomes)
    top.step(
        [t / 86400 for t in times], levels, where="post", color="black", lw=0.8, label="demand"
    )
    for outcome in outcomes:
        days = [s.t / 86400 for s in outcome.samples]
        top.step(
            days,
            [s.provisioned_gpus for s in outcome.samples],
            where="post",
            lw=0.8,
            label=f"{outcome.policy} provisioned",
        )
        bottom.plot(days, [s.cost for s in outcome.samples], lw=1.2, label=outcome.policy)
    top.set_ylabel("GPUs")
    top.legend(loc="upper left", fontsize=8)
    top.set_title("Provisioned vs demanded GPUs")
    bottom.set_ylabel("cumulative cost (on-demand GPU-hours)")
    bottom.set_xlabel("days since first submission")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
