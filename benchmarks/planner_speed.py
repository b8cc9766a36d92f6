"""Measure the capacity planner: 10,000 pending pods against 2,000 nodes in 6 pools.

    python benchmarks/planner_speed.py [--runs 5] [--baseline-runs 1] [--seed 7]

The cluster is made up but shaped like a busy one: 1,900 GPU nodes in six pools (spot and
on-demand A10G, H100 for training behind a taint, L40S and T4 for serving), most of them busy,
some half-used, some idle, plus 100 CPU nodes we do not manage; the pending pods come from jobs
of 1 to 200 identical workers (1, 2, 4 or 8 GPUs, some CPU-only) with several selector,
affinity and toleration shapes and all three spot policies. The planner's median over `--runs`
is set beside a naive baseline from this file: one pod at a time, first fit over every node
(resources first, then taints, selector, affinity and spot policy), else a new node in the pool
that takes it, spot first, then the lowest price per node; no grouping, scale-up only (so it
does less than the planner), and about a minute per run, hence one run by default. The target
is 1 s for the planner on this machine. Prints one JSON line last; asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from sparsam.api import constants as c
from sparsam.api.common import SpotPolicy
from sparsam.api.gpunodepool import CapacityType, Taint
from sparsam.decisions.capacity import (
    CapacityRules,
    ClusterState,
    Node,
    Offering,
    Pod,
    Pool,
    Resources,
    plan_capacity,
)
from sparsam.decisions.scheduling import (
    NodeSelectorRequirement,
    NodeSelectorTerm,
    Toleration,
    affinity_matches,
    selector_mismatch,
    untolerated,
)

T = TypeVar("T")
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TARGET_S = 1.0
ZONE = "topology.kubernetes.io/zone"
GPU_TAINT = Taint(c.TAINT_GPU, "NoSchedule", "present")
SPOT_TAINT = Taint(c.TAINT_SPOT, "NoSchedule", "spot")
TRAINING_TAINT = Taint("sparsam.dev/dedicated", "NoSchedule", "training")

# name, GPU type, GPUs, capacity type, price per node-hour, maxNodes, existing nodes, zone, taint
POOLS = (
    ("a10g-spot", "NVIDIA-A10G", 4, "spot", 2.27, 2000, 520, "us-east-1a", None),
    ("a10g-on-demand", "NVIDIA-A10G", 4, "on-demand", 5.67, 1000, 300, "us-east-1a", None),
    ("h100-spot", "NVIDIA-H100", 8, "spot", 29.5, 1000, 180, "us-east-1b", TRAINING_TAINT),
    ("h100-on-demand", "NVIDIA-H100", 8, "on-demand", 98.3, 300, 100, "us-east-1b", TRAINING_TAINT),
    ("l40s-on-demand", "NVIDIA-L40S", 1, "on-demand", 1.86, 2500, 400, "us-east-1a", None),
    ("t4-spot", "NVIDIA-T4", 1, "spot", 0.21, 2500, 400, "us-east-1b", None),
)  # fmt: skip

TOLERATE_GPU = Toleration(key=c.TAINT_GPU, operator="Exists")
TOLERATE_SPOT = Toleration(key=c.TAINT_SPOT, value=c.CAPACITY_SPOT)
TOLERATE_TRAINING = Toleration(key=TRAINING_TAINT.key, value="training")
NOT_T4 = (
    NodeSelectorTerm((NodeSelectorRequirement(c.LABEL_GPU_PRODUCT, "NotIn", ("NVIDIA-T4",)),)),
)
#: Selector shapes by workload: training goes to A10G or H100, serving to anything but H100.
TRAINING_SELECTORS: tuple[dict[str, str], ...] = (
    {},
    {c.LABEL_GPU_PRODUCT: "NVIDIA-H100"},
    {c.LABEL_GPU_PRODUCT: "NVIDIA-A10G"},
)
SERVING_SELECTORS: tuple[dict[str, str], ...] = (
    {},
    {ZONE: "us-east-1a"},
    {c.LABEL_GPU_PRODUCT: "NVIDIA-L40S"},
    {c.LABEL_GPU_PRODUCT: "NVIDIA-T4"},
)


def build_pools() -> tuple[Pool, ...]:
    pools = []
    for name, gpu, gpus, capacity, price, max_nodes, _, zone, taint in POOLS:
        taints = [GPU_TAINT] + ([SPOT_TAINT] if capacity == "spot" else [])
        taints += [taint] if taint else []
        pools.append(
            Pool(
                name=name,
                gpu_type=gpu,
                node_resources=Resources.of(gpus, 12 * gpus, f"{64 * gpus}Gi"),
                capacity_type=cast(CapacityType, capacity),
                price_per_hour=price,
                max_nodes=max_nodes,
                min_nodes=2 if capacity == "on-demand" else 0,
                scale_down_after=timedelta(minutes=10),
                labels={
                    c.LABEL_POOL: name,
                    c.LABEL_GPU_PRODUCT: gpu,
                    c.LABEL_CAPACITY_TYPE: capacity,
                    ZONE: zone,
                },
                taints=tuple(taints),
            )
        )
    return tuple(pools)


def _job_pods(rng: random.Random, job: int, count: int, prefix: str) -> list[Pod]:
    """`count` identical pods of one job: training workers, model servers or CPU-only helpers,
    with tolerations that agree with their spot policy, as the operator would set them."""
    kind = rng.choices(["training", "serving", "cpu"], weights=[47, 48, 5])[0]
    spot = rng.choices(["Prefer", "Require", "Never"], weights=[6, 2, 2])[0]
    tolerations = [TOLERATE_GPU] + ([TOLERATE_SPOT] if spot != "Never" else [])
    selector: dict[str, str] = {}
    affinity: tuple[NodeSelectorTerm, ...] = ()
    namespace = f"team-{job % 4}"
    if kind == "training":
        gpus = rng.choice([2, 4, 4, 8])
        tolerations.append(TOLERATE_TRAINING)
        selector = rng.choice(TRAINING_SELECTORS[:2] if gpus == 8 else TRAINING_SELECTORS)
    elif kind == "serving":
        gpus = 1
        # L40S nodes are on-demand only, T4 nodes spot only: selectors agree with the policy.
        allowed = {"Never": (0, 1, 2), "Require": (0, 1, 3), "Prefer": (0, 1, 2, 3)}[spot]
        selector = SERVING_SELECTORS[rng.choice(allowed)]
        affinity = NOT_T4 if not selector and rng.random() < 0.3 else ()
        # team-4 may only use the serving GPU types (its CostPolicy's allowedGPUTypes)
        namespace = "team-4" if rng.random() < 0.3 else namespace
    else:
        gpus, tolerations = 0, []
    per_gpu = max(gpus, 1)
    cpu, memory = rng.choice([2, 4, 8]) * per_gpu, rng.choice([8, 16, 32]) * per_gpu
    return [
        Pod(
            name=f"{prefix}-{job}-{i}",
            namespace=namespace,
            requests=Resources.of(gpus, cpu, f"{memory}Gi"),
            node_selector=selector,
            tolerations=tuple(tolerations),
            affinity=affinity,
            spot=cast(SpotPolicy, spot),
            priority=rng.choice([0, 0, 100]),
            training_worker=kind == "training",
            fresh_checkpoint=kind == "training" and rng.random() < 0.5,
            do_not_disrupt=rng.random() < 0.05,
        )
        for i in range(count)
    ]


def build_state(seed: int, pods: int = 10_000, nodes: int = 2_000) -> ClusterState:
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    pools = build_pools()
    pending: list[Pod] = []
    job = 0
    while len(pending) < pods:
        size = min(pods - len(pending), rng.choice([1, 1, 2, 4, 8, 16, 32, 64, 128, 200]))
        pending += _job_pods(rng, job, size, "pending")
        job += 1
    the_nodes: list[Node] = []
    for pool, spec in zip(pools, POOLS, strict=True):
        for i in range(spec[6]):
            name = f"{pool.name}-{i}"
            fill = rng.choices(["full", "half", "idle", "old-idle"], weights=[70, 18, 8, 4])[0]
            bound: list[Pod] = []
            if fill in ("full", "half"):
                gpus = pool.gpus_per_node if fill == "full" else max(pool.gpus_per_node // 4, 1)
                for k in range(gpus):
                    bound.append(
                        Pod(
                            name=f"{name}-w{k}",
                            namespace=f"team-{k % 5}",
                            requests=Resources.of(1, 8, "48Gi"),
                            tolerations=(TOLERATE_GPU, TOLERATE_SPOT, TOLERATE_TRAINING),
                            spot="Prefer",
                            training_worker=rng.random() < 0.3,
                            fresh_checkpoint=rng.random() < 0.5,
                        )
                    )
            idle = {"idle": 3, "old-idle": 30}.get(fill)
            the_nodes.append(
                Node(
                    name=name,
                    pool=pool.name,
                    allocatable=pool.node_resources,
                    created=NOW - timedelta(hours=rng.randint(1, 48)),
                    labels={**pool.labels, "kubernetes.io/hostname": name},
                    taints=pool.taints,
                    capacity_type=pool.capacity_type,
                    empty_since=None if idle is None else NOW - timedelta(minutes=idle),
                    pods=tuple(bound),
                )
            )
    for i in range(nodes - len(the_nodes)):
        name = f"cpu-{i}"
        the_nodes.append(
            Node(
                name,
                None,
                Resources.of(0, 32, "128Gi"),
                NOW - timedelta(days=3),
                labels={"kubernetes.io/hostname": name, ZONE: "us-east-1a"},
                pods=tuple(
                    Pod(f"{name}-svc{k}", "default", Resources.of(0, 2, "4Gi")) for k in range(12)
                ),
            )
        )
    return ClusterState(
        pools=pools,
        nodes=tuple(the_nodes),
        pending=tuple(pending),
        offerings={"h100-spot": Offering(last_failure=NOW - timedelta(minutes=2))},
        rules={"team-4": CapacityRules(allowed_gpu_types=frozenset({"NVIDIA-L40S", "NVIDIA-T4"}))},
    )


# --- the naive baseline ---------------------------------------------------------------------


@dataclass
class _Bin:
    room: list[int]
    labels: dict[str, str]
    taints: tuple[Taint, ...]
    capacity_type: str
    gpu_type: str


def _may_run(pod: Pod, rules: CapacityRules, b: _Bin) -> bool:
    if (pod.spot, b.capacity_type) in {("Never", "spot"), ("Require", "on-demand")}:
        return False
    allowed = rules.allowed_gpu_types
    if allowed is not None and b.gpu_type and b.gpu_type not in allowed:
        return False
    return (
        selector_mismatch(pod.node_selector.items(), b.labels) is None
        and affinity_matches(pod.affinity, b.labels)
        and untolerated(pod.tolerations, b.taints) is None
    )


def naive_plan(state: ClusterState) -> tuple[dict[str, int], int]:
    """One pod at a time: first fit over every node, else open the cheapest pool that takes it.
    Returns the nodes added per pool and the pods left without a place."""
    pools = {p.name: p for p in state.pools}
    bins: list[_Bin] = []
    for node in state.nodes:
        if node.cordoned:
            continue
        room = list(node.allocatable.as_tuple())
        for pod in node.pods:
            for d, r in enumerate(pod.requests.as_tuple()):
                room[d] -= r
        gpu = pools[node.pool].gpu_type if node.pool in pools else ""
        bins.append(_Bin(room, dict(node.labels), node.taints, node.capacity_type, gpu))
    count = {name: sum(1 for n in state.nodes if n.pool == name) for name in pools}
    added = dict.fromkeys(pools, 0)
    left = 0
    ordered = sorted(state.pending, key=lambda p: (-p.priority, -p.requests.gpus))
    for pod in ordered:
        req = pod.requests.as_tuple()
        rules = state.rules_for(pod.namespace)
        for b in bins:
            if all(r <= h for r, h in zip(req, b.room, strict=True)) and _may_run(pod, rules, b):
                for d in range(3):
                    b.room[d] -= req[d]
                break
        else:
            options = []
            for pool in pools.values():
                size = pool.node_resources.as_tuple()
                new = _Bin(
                    list(size), dict(pool.labels), pool.taints, pool.capacity_type, pool.gpu_type
                )
                if (
                    count[pool.name] < pool.max_nodes
                    and all(r <= h for r, h in zip(req, size, strict=True))
                    and _may_run(pod, rules, new)
                ):
                    spot_first = 0 if pool.capacity_type == "spot" else 1
                    options.append((spot_first, pool.price_per_hour, pool.name, new))
            if not options:
                left += 1
                continue
            _, _, name, new = min(options, key=lambda o: o[:3])
            for d in range(3):
                new.room[d] -= req[d]
            bins.append(new)
            count[name] += 1
            added[name] += 1
    return {k: v for k, v in added.items() if v}, left


def _median_time(runs: int, work: Callable[[], T]) -> tuple[float, T]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-runs", type=int, default=1)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    state = build_state(args.seed, args.pods, args.nodes)
    prices = {pool.name: pool.price_per_hour for pool in state.pools}
    median, plan = _median_time(args.runs, lambda: plan_capacity(state, NOW))
    baseline, (naive_added, naive_left) = _median_time(
        args.baseline_runs, lambda: naive_plan(state)
    )
    add = dict(plan.add)
    print(f"planner:  {median:.3f} s median of {args.runs}", file=sys.stderr)
    print(f"  adds {add}, removes {len(plan.remove)} nodes", file=sys.stderr)
    print(f"  {len(plan.unschedulable)} pods fit nowhere", file=sys.stderr)
    print(f"baseline: {baseline:.3f} s median of {args.baseline_runs}", file=sys.stderr)
    print(f"  adds {naive_added}, {naive_left} pods left", file=sys.stderr)
    result = {
        "benchmark": "planner_speed",
        "pods": len(state.pending),
        "nodes": len(state.nodes),
        "median_s": round(median, 4),
        "baseline_median_s": round(baseline, 4),
        "speedup": round(baseline / median, 1),
        "target_s": TARGET_S,
        "runs": args.runs,
        "baseline_runs": args.baseline_runs,
        "added_nodes": sum(add.values()),
        "added_cost_per_hour": round(sum(prices[k] * v for k, v in add.items()), 2),
        "removed_nodes": len(plan.remove),
        "unschedulable_pods": len(plan.unschedulable),
        "baseline_added_nodes": sum(naive_added.values()),
        "baseline_added_cost_per_hour": round(
            sum(prices[k] * v for k, v in naive_added.items()), 2
        ),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
