"""The three capacity policies the simulator compares, each a set of node pools the SAME
planner (`sparsam.decisions.capacity`) manages:

1. **static**: one on-demand pool with minNodes = maxNodes = ceil(peak GPU demand / GPUs per
   node), its nodes ready from the start (provisioned before the trace begins);
2. **reactive**: one on-demand pool, minNodes 0, scaleDownAfter 10 minutes: the planner adds
   nodes for pending pods and removes nodes idle for 10 minutes, as Cluster Autoscaler does
   with its defaults (scale-down-unneeded-time 10m, scale-down-utilization-threshold 0.5:
   the planner's `underused_below` is 0.5 too). It is the planner, restricted to on-demand;
3. **sparsam**: one or more spot pools (`spot`; several: `spot-a`, `spot-b`, ..., same
   price, each with its own market) and an on-demand pool, pods Prefer spot (the planner
   falls back to on-demand only when spot is unavailable or failing), scaleDownAfter
   `sparsam_scale_down` (default 10m, GPUNodePool's default: then sparsam and reactive differ
   only in spot).

Pools and pods are built here: how a rigid Philly job becomes worker pods is `job_pods`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

from sparsam.api import constants as c
from sparsam.api.common import SpotPolicy
from sparsam.api.gpunodepool import CapacityType, Taint
from sparsam.decisions.capacity import PlannerSettings, Pod, Pool, Resources
from sparsam.decisions.scheduling import Toleration
from sparsam.simulate.traces import Job

NAMESPACE = "philly"
GPU_TYPE = "NVIDIA-GPU"
#: CPU (millicores) and memory (bytes) a node offers per GPU; pods request the same per GPU,
#: so GPUs are the binding resource, as on a GPU node sized for training.
CPU_PER_GPU = 12_000
MEMORY_PER_GPU = 144 * 2**30
TOLERATIONS = (
    Toleration(key=c.TAINT_GPU, operator="Exists"),
    Toleration(key=c.TAINT_SPOT, operator="Equal", value=c.CAPACITY_SPOT),
)


@dataclass(frozen=True, slots=True)
class Policy:
    """A capacity policy: the pools, the spot policy of every pod, and whether the pools'
    minNodes are ready at the start (static) or come up after the provisioning delay."""

    name: str
    pools: tuple[Pool, ...]
    spot: SpotPolicy
    ready_at_start: bool = False
    #: The planner's own knobs (e.g. how new spot nodes are spread across spot pools).
    planner: PlannerSettings = field(default_factory=PlannerSettings)


def make_pool(
    name: str,
    capacity: CapacityType,
    gpus_per_node: int,
    price_per_gpu_hour: float,
    *,
    max_nodes: int,
    min_nodes: int = 0,
    scale_down_after: timedelta = timedelta(minutes=10),
) -> Pool:
    """A pool as the controller would build it from a GPUNodePool: labels and taints included
    (GPU taint on every node, the capacity-type taint on spot nodes)."""
    taints = [Taint(c.TAINT_GPU, "NoSchedule", "present")]
    if capacity == c.CAPACITY_SPOT:
        taints.append(Taint(c.TAINT_SPOT, "NoSchedule", c.CAPACITY_SPOT))
    return Pool(
        name=name,
        gpu_type=GPU_TYPE,
        node_resources=Resources(
            gpus_per_node, CPU_PER_GPU * gpus_per_node, MEMORY_PER_GPU * gpus_per_node
        ),
        capacity_type=capacity,
        price_per_hour=price_per_gpu_hour * gpus_per_node,
        max_nodes=max_nodes,
        min_nodes=min_nodes,
        scale_down_after=scale_down_after,
        labels={
            c.LABEL_POOL: name,
            c.LABEL_GPU_PRODUCT: GPU_TYPE,
            c.LABEL_GPU_COUNT: str(gpus_per_node),
            c.LABEL_CAPACITY_TYPE: capacity,
        },
        taints=tuple(taints),
    )


def pod_gpus(gpus: int, gpus_per_node: int) -> list[int]:
    """A rigid job of `gpus` GPUs as worker pods: full nodes of `gpus_per_node`, then one pod
    with the rest (8 -> [8]; 16 -> [8, 8]; 12 -> [8, 4]; 4 -> [4] with 8 per node). That is
    ceil(gpus / gpus_per_node) pods, min = max workers: the job runs only with all of them."""
    full, rest = divmod(gpus, gpus_per_node)
    return [gpus_per_node] * full + ([rest] if rest else [])


def job_pods(job: Job, gpus_per_node: int, spot: SpotPolicy) -> tuple[Pod, ...]:
    """The worker pods of `job`: training workers that never carry a fresh checkpoint from the
    planner's point of view, so consolidation never moves a running job."""
    return tuple(
        Pod(
            name=f"{job.id}-w{index}",
            namespace=NAMESPACE,
            requests=Resources(gpus, CPU_PER_GPU * gpus, MEMORY_PER_GPU * gpus),
            tolerations=TOLERATIONS,
            spot=spot,
            training_worker=True,
            fresh_checkpoint=False,
        )
        for index, gpus in enumerate(pod_gpus(job.gpus, gpus_per_node))
    )


def peak_demand(jobs: list[Job]) -> int:
    """The trace's peak concurrent GPU demand if every job ran from submission for its
    runtime."""
    edges: list[tuple[float, int]] = []
    for job in jobs:
        edges.append((job.submit_s, job.gpus))
        edges.append((job.submit_s + job.runtime_s, -job.gpus))
    edges.sort(key=lambda e: (e[0], e[1]))
    peak = level = 0
    for _, delta in edges:
        level += delta
        peak = max(peak, level)
    return peak


def spot_pool_names(count: int) -> list[str]:
    """`spot` for one spot pool; `spot-a`, `spot-b`, ... for several."""
    if not 1 <= count <= 26:
        raise ValueError(f"between 1 and 26 spot pools, not {count}")
    return ["spot"] if count == 1 else [f"spot-{chr(ord('a') + i)}" for i in range(count)]


def three_policies(
    jobs: list[Job],
    gpus_per_node: int,
    spot_price_per_gpu_hour: float,
    *,
    sparsam_scale_down: timedelta = timedelta(minutes=10),
    spot_pools: int = 1,
    planner: PlannerSettings | None = None,
) -> tuple[Policy, Policy, Policy]:
    """static, reactive and sparsam for this trace. The elastic pools' maxNodes are high
    enough that they never bind (every job's GPUs at once). `planner`: sparsam's planner
    settings (how new spot nodes are spread, whether new spot comes before on-demand room)."""
    static_nodes = max(1, math.ceil(peak_demand(jobs) / gpus_per_node))
    largest = max((job.gpus for job in jobs), default=gpus_per_node)
    static_nodes = max(static_nodes, math.ceil(largest / gpus_per_node))
    unbounded = max(1, sum(len(pod_gpus(job.gpus, gpus_per_node)) for job in jobs))
    static = Policy(
        "static",
        (
            make_pool(
                "static-on-demand",
                c.CAPACITY_ON_DEMAND,
                gpus_per_node,
                1.0,
                max_nodes=static_nodes,
                min_nodes=static_nodes,
            ),
        ),
        spot="Never",
        ready_at_start=True,
    )
    reactive = Policy(
        "reactive",
        (make_pool("on-demand", c.CAPACITY_ON_DEMAND, gpus_per_node, 1.0, max_nodes=unbounded),),
        spot="Never",
    )
    sparsam = Policy(
        "sparsam",
        (
            *(
                make_pool(
                    name,
                    c.CAPACITY_SPOT,
                    gpus_per_node,
                    spot_price_per_gpu_hour,
                    max_nodes=unbounded,
                    scale_down_after=sparsam_scale_down,
                )
                for name in spot_pool_names(spot_pools)
            ),
            make_pool(
                "on-demand",
                c.CAPACITY_ON_DEMAND,
                gpus_per_node,
                1.0,
                max_nodes=unbounded,
                scale_down_after=sparsam_scale_down,
            ),
        ),
        spot="Prefer",
        planner=planner or PlannerSettings(),
    )
    return static, reactive, sparsam
