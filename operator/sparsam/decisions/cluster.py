"""The cluster as the capacity planner sees it: frozen inputs, built by the caller.

The controller builds these from its watch caches (Pods, Nodes, GPUNodePools, CostPolicies);
the simulator builds them from a trace. Everything a decision depends on is here, except the
clock, which comes as `now` beside them. Resources are integers (GPUs, CPU millicores, memory
bytes), so packing arithmetic is exact and planning twice gives the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sparsam.api import constants as c
from sparsam.api.common import SpotPolicy
from sparsam.api.gpunodepool import CapacityType, GPUNodePool, GPUNodePoolSpec, Taint
from sparsam.api.parse import Quantity
from sparsam.decisions.effective_policy import EffectivePolicy
from sparsam.decisions.scheduling import NodeSelectorTerm, Toleration

#: (namespace, name): how a pod is named in a plan.
PodKey = tuple[str, str]


def _quantity(value: str | int | float | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Quantity.parse(value)


@dataclass(frozen=True, slots=True, order=True)
class Resources:
    """Requests of a pod, or what a node offers: GPUs, CPU in millicores, memory in bytes."""

    gpus: int = 0
    cpu_millis: int = 0
    memory_bytes: int = 0

    @classmethod
    def of(
        cls,
        gpus: int = 0,
        cpu: str | int | float | Decimal = 0,
        memory: str | int | float | Decimal = 0,
    ) -> Resources:
        """From Kubernetes quantities: `Resources.of(gpus=1, cpu="500m", memory="16Gi")`."""
        return cls(
            gpus,
            math.ceil(_quantity(cpu) * 1000),
            math.ceil(_quantity(memory)),
        )

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.gpus, self.cpu_millis, self.memory_bytes)


@dataclass(frozen=True, slots=True)
class Pod:
    """A pod: pending, or bound to a node (then in `Node.pods`).

    `spot` is derived by the caller (the owning TrainingJob's or InferenceService's
    spec.capacity.spot, else the namespace's CostPolicy default). The flags say whether the pod
    may be moved to empty a node: `do_not_disrupt` is the `karpenter.sh/do-not-disrupt`
    annotation; a training worker may move only with a fresh checkpoint. `daemon` pods (a
    DaemonSet's) use room but do not keep a node busy, and go away with it.
    """

    name: str
    namespace: str
    requests: Resources
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    #: Required node affinity: nodeSelectorTerms, ORed.
    affinity: tuple[NodeSelectorTerm, ...] = ()
    spot: SpotPolicy = "Prefer"
    priority: int = 0
    training_worker: bool = False
    fresh_checkpoint: bool = False
    do_not_disrupt: bool = False
    daemon: bool = False
    #: For a pending pod: the node a previous plan put it on (the plan's placements, kept by
    #: the controller until the pod is bound), or the scheduler's status.nominatedNodeName.
    #: The planner puts it there first if it still fits, so that planning again while added
    #: nodes come up does not add them twice.
    nominated_node: str | None = None

    @property
    def key(self) -> PodKey:
        return (self.namespace, self.name)

    @property
    def movable(self) -> bool:
        """May the planner evict it to empty its node?"""
        if self.do_not_disrupt:
            return False
        return not (self.training_worker and not self.fresh_checkpoint)


@dataclass(frozen=True, slots=True)
class Node:
    """A node. `pool` is None for nodes we do not manage: their free room takes pending pods,
    but they are never removed (nor are nodes of a pool that is not in the state).
    `empty_since` is when its last non-daemon pod left (the caller keeps it); an empty node with
    None counts as empty since `created`. A node that is not ready yet is capacity on its way,
    until it is older than the planner's provisioning timeout."""

    name: str
    pool: str | None
    allocatable: Resources
    created: datetime
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    #: From the karpenter.sh/capacity-type label; a node without it is on-demand.
    capacity_type: CapacityType = "on-demand"
    ready: bool = True
    cordoned: bool = False
    empty_since: datetime | None = None
    pods: tuple[Pod, ...] = ()


def node_labels(pool_name: str, spec: GPUNodePoolSpec) -> dict[str, str]:
    """Every label a pool's node gets: the kubelet's well-known os and arch (GPU pools are Linux;
    amd64 unless the template says otherwise), the template's, then the ones the operator always
    sets. A pending pod's selector is matched against exactly these."""
    template = spec.node_template
    labels = {c.LABEL_OS: "linux", c.LABEL_ARCH: "amd64", **(template.labels or {})}
    labels.update(
        {
            c.LABEL_POOL: pool_name,
            c.LABEL_GPU_PRODUCT: template.gpu_type,
            c.LABEL_GPU_COUNT: str(template.gpus_per_node),
            c.LABEL_CAPACITY_TYPE: spec.capacity_type,
        }
    )
    if template.instance_type:
        labels[c.LABEL_INSTANCE_TYPE] = template.instance_type
    return labels


def node_taints(spec: GPUNodePoolSpec) -> tuple[Taint, ...]:
    """Every taint a pool's node gets: nvidia.com/gpu on GPU nodes, the capacity-type taint on
    spot nodes, then the template's own (one per key and effect)."""
    taints: list[Taint] = []
    if spec.node_template.gpus_per_node > 0:
        taints.append(Taint(key=c.TAINT_GPU, value="present", effect="NoSchedule"))
    if spec.capacity_type == c.CAPACITY_SPOT:
        taints.append(Taint(key=c.TAINT_SPOT, value=c.CAPACITY_SPOT, effect="NoSchedule"))
    for taint in spec.node_template.taints or ():
        if all((t.key, t.effect) != (taint.key, taint.effect) for t in taints):
            taints.append(taint)
    return tuple(taints)


@dataclass(frozen=True, slots=True)
class Pool:
    """A GPUNodePool, and what each of its future nodes will look like (`labels`, `taints`,
    `node_resources`), so a pending pod can be checked against a node that does not exist yet."""

    name: str
    gpu_type: str
    node_resources: Resources
    capacity_type: CapacityType
    price_per_hour: float
    max_nodes: int
    min_nodes: int = 0
    scale_down_after: timedelta = timedelta(minutes=10)
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()

    @property
    def gpus_per_node(self) -> int:
        return self.node_resources.gpus

    @classmethod
    def from_gpunodepool(cls, pool: GPUNodePool) -> Pool:
        spec = pool.spec
        template = spec.node_template
        return cls(
            name=pool.metadata.name,
            gpu_type=template.gpu_type,
            node_resources=Resources.of(template.gpus_per_node, template.cpu, template.memory),
            capacity_type=spec.capacity_type,
            price_per_hour=spec.price_per_hour,
            max_nodes=spec.max_nodes,
            min_nodes=spec.min_nodes,
            scale_down_after=spec.scale_down_after,
            labels=node_labels(pool.metadata.name, spec),
            taints=node_taints(spec),
        )


@dataclass(frozen=True, slots=True)
class Offering:
    """What the provider told us about a pool lately. `unavailable_until`: it raised
    InsufficientCapacity, so add nothing there before then. `last_failure`: its last failed
    add; a spot pool that failed within onDemandFallbackAfter sends Prefer pods to on-demand."""

    unavailable_until: datetime | None = None
    last_failure: datetime | None = None


#: How long a pool whose provider raised InsufficientCapacity gets no new nodes.
OFFERING_TTL = timedelta(minutes=3)


def refused_offering(now: datetime, ttl: timedelta = OFFERING_TTL) -> Offering:
    """What a pool's offering is once its provider raised InsufficientCapacity at `now`:
    unavailable for `ttl`, and a recent failure (for onDemandFallbackAfter) from `now` on. The
    capacity controller and the simulator both record a refusal with this."""
    return Offering(now + ttl, now)


def expire_offerings(offerings: Mapping[str, Offering], now: datetime) -> dict[str, Offering]:
    """`offerings` at `now`: a pool whose unavailability has run out may get nodes again, and
    is still remembered as a recent failure, for onDemandFallbackAfter."""
    return {
        pool: (
            Offering(None, offering.last_failure)
            if offering.unavailable_until is not None and offering.unavailable_until <= now
            else offering
        )
        for pool, offering in offerings.items()
    }


@dataclass(frozen=True, slots=True)
class CapacityRules:
    """The parts of a namespace's effective CostPolicy the planner obeys."""

    #: None allows every GPU type.
    allowed_gpu_types: frozenset[str] | None = None
    on_demand_fallback_after: timedelta = timedelta(minutes=5)

    @classmethod
    def from_policy(cls, policy: EffectivePolicy) -> CapacityRules:
        allowed = policy.allowed_gpu_types
        return cls(
            allowed_gpu_types=None if allowed is None else frozenset(allowed),
            on_demand_fallback_after=policy.on_demand_fallback_after,
        )


@dataclass(frozen=True, slots=True)
class PlannerSettings:
    """Knobs of the planner itself (not of any one pool)."""

    #: A node is under-used, and a candidate for consolidation, when its most-requested
    #: resource (GPU, CPU or memory, as a fraction of allocatable) is below this. Cluster
    #: Autoscaler's scale-down-utilization-threshold is 0.5 too.
    underused_below: float = 0.5
    #: A node that is still not ready this long after it was created is no longer counted as
    #: capacity on its way.
    provisioning_timeout: timedelta = timedelta(minutes=15)
    #: At most this share of the new and existing nodes of the healthy spot pools a group of
    #: pods may use sits in any one of them (one pool's outage or group loss then takes a
    #: bounded share); new nodes go to the cheapest pool within the share, else to the pool
    #: with the fewest nodes. 1.0: no cap, the cheapest pool takes every new node.
    spot_pool_max_share: float = 1.0
    #: Pods that Prefer spot get new nodes in a healthy spot pool before free room on
    #: on-demand nodes (False: any free room first, spot before on-demand, as room that
    #: exists is paid for). A long training job put in an on-demand node's room stays on
    #: on-demand for its whole run; the idle room costs only until scaleDownAfter.
    new_spot_before_on_demand_room: bool = False


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Everything the capacity planner decides from, except `now`."""

    pools: tuple[Pool, ...]
    nodes: tuple[Node, ...] = ()
    pending: tuple[Pod, ...] = ()
    #: By pool name; a pool without an entry has had no trouble.
    offerings: Mapping[str, Offering] = field(default_factory=dict)
    #: By namespace: each namespace's effective CostPolicy, resolved by the caller.
    rules: Mapping[str, CapacityRules] = field(default_factory=dict)
    default_rules: CapacityRules = CapacityRules()
    settings: PlannerSettings = PlannerSettings()

    def rules_for(self, namespace: str) -> CapacityRules:
        return self.rules.get(namespace, self.default_rules)
