"""The capacity planner: which nodes to add to which GPUNodePool, and which nodes to remove.

    plan = plan_capacity(state, now)          # pure: frozen inputs + the clock -> frozen plan
    state = apply_plan(state, plan, now)      # pure: what the cluster looks like once it is done

The controller calls `plan_capacity` with `now` from its clock and acts on the plan; the
simulator calls the same function with a simulated clock and `apply_plan` in place of a cluster.
The inputs are in `cluster`, the bucketed packing in `packing`, the rounds in `rightsizing`, the
sentences in `capacity_reasons`, the Kubernetes predicates in `scheduling`.

How it decides (a heuristic, not an optimum):

1. **minNodes**: a pool below its minNodes gets empty nodes up to it (they take pods below).
2. **Pending pods**: a pod nominated to a node by an earlier plan goes there first if it still
   fits. The others are grouped into shapes of identical pods, highest priority first, then
   largest first (GPUs, CPU, memory: first-fit decreasing). Each group first fills free room on
   existing nodes (ready ones, and ones still provisioning, so that planning again while they
   come up does not add them twice), spot before on-demand, tightest room first, whatever the
   offerings say (room that exists is paid for). What is left opens new nodes: pools are tried
   in tiers by the group's spot policy (Require: available spot pools; Never: on-demand pools;
   Prefer: healthy spot pools, then on-demand, then spot pools that failed within
   onDemandFallbackAfter), and within a tier the pool that hosts the group for the least money
   (nodes needed x price per node-hour) wins, up to its maxNodes, then the next one. A pool
   whose offering is unavailable (InsufficientCapacity) gets nothing until it is available again.
3. **Scale-down**: nodes of our pools that have been empty for scaleDownAfter are removed, then
   under-used nodes (most-requested resource below `PlannerSettings.underused_below`, older than
   scaleDownAfter) whose every pod may move (no do-not-disrupt, no training worker without a
   fresh checkpoint) and fits on the other ready, busy nodes that stay; never below minNodes.
4. Steps 1-3 repeat until a round changes nothing (removals can make room under maxNodes for
   pods that were capped, or make other nodes removable), so the plan is a fixed point: planning
   again at the same `now` on the applied plan (pods bound, or still pending and nominated)
   adds and removes nothing.

Known limits: the packing is greedy (a group's choice of pool ignores the groups after it, and
first-fit decreasing can open more nodes than an optimal packing would); consolidation only
deletes nodes, it never replaces one by a cheaper one; pod-count limits, Gt/Lt affinity, pod
(anti-)affinity, topology spread and PodDisruptionBudgets are not modelled (the controller
re-validates a drain and evicts through the Eviction API, which honours PDBs); nodes above a
lowered maxNodes are not removed for that reason alone; without the nominations (say, after an
operator restart) a replan may pack differently and add a node that then idles until
scaleDownAfter removes it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from sparsam.decisions.capacity_reasons import add_reason, unschedulable_reason
from sparsam.decisions.cluster import (
    OFFERING_TTL,
    CapacityRules,
    ClusterState,
    Node,
    Offering,
    PlannerSettings,
    Pod,
    PodKey,
    Pool,
    Resources,
    expire_offerings,
    node_labels,
    node_taints,
    refused_offering,
)
from sparsam.decisions.packing import Slot
from sparsam.decisions.rightsizing import Planner

__all__ = [
    "OFFERING_TTL",
    "CapacityRules",
    "ClusterState",
    "NewNode",
    "Node",
    "NodeRef",
    "Offering",
    "Plan",
    "PlannerSettings",
    "Pod",
    "PodKey",
    "Pool",
    "Resources",
    "apply_plan",
    "expire_offerings",
    "node_labels",
    "node_taints",
    "plan_capacity",
    "refused_offering",
]


@dataclass(frozen=True, slots=True, order=True)
class NewNode:
    """The `index`-th node the plan adds to `pool` (0-based); it has no name yet."""

    pool: str
    index: int


#: Where the plan puts a pod: an existing node by name, or a node the plan adds.
NodeRef = str | NewNode


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do, and why. `add_reasons` (by pool) and `remove_reasons` (by node) are short
    sentences for the pool's status `lastAction.reason` and Events. `placements` (pending pods)
    and `moves` (pods on removed nodes) say where the packing put pods: the scheduler places them
    for real; the controller keeps them as nominations (`Pod.nominated_node`) for the next plan,
    and `apply_plan`, the tests and the simulator use them. `unschedulable` names the pending
    pods that fit nowhere, and why."""

    add: Mapping[str, int] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    add_reasons: Mapping[str, str] = field(default_factory=dict)
    remove_reasons: Mapping[str, str] = field(default_factory=dict)
    unschedulable: Mapping[PodKey, str] = field(default_factory=dict)
    placements: Mapping[PodKey, NodeRef] = field(default_factory=dict)
    moves: Mapping[PodKey, NodeRef] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when there is nothing to add or remove."""
        return not self.add and not self.remove


def plan_capacity(state: ClusterState, now: datetime) -> Plan:
    """Plan node additions and removals for `state` at `now`. Pure: no I/O, no clock."""
    planner = Planner(state, now).run()
    refs: dict[int, NodeRef] = {}
    added: Counter[str] = Counter()
    for slot in planner.ws.slots:
        if slot.new and not slot.removed:
            pool = slot.pool or ""
            refs[slot.serial] = NewNode(pool, added[pool])
            added[pool] += 1

    def ref(slot: Slot) -> NodeRef:
        return refs.get(slot.serial, slot.name)

    placements = {e.pod.key: ref(e.slot) for e in planner.pending if e.slot is not None}
    moves = {
        e.pod.key: ref(e.slot)
        for slot in planner.ws.slots
        for e in slot.pods
        if e.home is not None and e.slot is not e.home and e.slot is not None
    }
    unschedulable: dict[PodKey, str] = {}
    explained: dict[int, str] = {}
    for group in planner.groups:
        reason = explained.get(group.shape.id)
        if reason is None:
            reason = explained[group.shape.id] = unschedulable_reason(planner, group.shape)
        for entry in group.entries:
            unschedulable[entry.pod.key] = reason
    return Plan(
        add=dict(sorted(added.items())),
        remove=tuple(sorted(planner.removed)),
        add_reasons={pool: add_reason(planner, pool, n) for pool, n in sorted(added.items())},
        remove_reasons=dict(sorted(planner.removed.items())),
        unschedulable=unschedulable,
        placements=placements,
        moves=moves,
    )


def apply_plan(
    state: ClusterState,
    plan: Plan,
    now: datetime,
    *,
    bind: bool = True,
    name_new_node: Callable[[NewNode], str] | None = None,
) -> ClusterState:
    """The state once `plan` is carried out at `now`: new nodes exist (not ready yet, created
    `now`, labelled and tainted as their pool says) and removed nodes are gone.

    With `bind` (the default), pending pods are bound where the plan put them and the pods of
    removed nodes where it moved them. Without it, the state is the one a real cluster shows
    right after acting, before the scheduler has placed anything: those pods are pending,
    nominated to the node the plan chose for them. A pod of a removed node that the plan did not
    move is pending again. New nodes are named by `name_new_node`, by default `<pool>-<n>` with
    the smallest n not taken."""
    pools = {pool.name: pool for pool in state.pools}
    taken = {node.name for node in state.nodes}
    names: dict[NewNode, str] = {}
    for pool_name, count in sorted(plan.add.items()):
        for index in range(count):
            new = NewNode(pool_name, index)
            name = name_new_node(new) if name_new_node else _free_name(pool_name, taken)
            taken.add(name)
            names[new] = name

    removed = set(plan.remove)
    pending: list[Pod] = []
    incoming: dict[str, list[Pod]] = defaultdict(list)

    def send(pod: Pod, target: NodeRef | None) -> None:
        name = None if target is None else target if isinstance(target, str) else names[target]
        if bind and name is not None:
            incoming[name].append(pod)
        else:
            pending.append(replace(pod, nominated_node=name))

    for pod in state.pending:
        send(pod, plan.placements.get(pod.key))
    for node in state.nodes:
        if node.name in removed:
            for pod in node.pods:
                if not pod.daemon:
                    send(pod, plan.moves.get(pod.key))

    nodes: list[Node] = []
    for node in state.nodes:
        if node.name in removed:
            continue
        extra = incoming.pop(node.name, [])
        if extra:
            node = replace(node, pods=node.pods + tuple(extra), empty_since=None)
        nodes.append(node)
    for new, name in names.items():
        pool = pools[new.pool]
        pods = tuple(incoming.pop(name, []))
        nodes.append(
            Node(
                name=name,
                pool=pool.name,
                allocatable=pool.node_resources,
                created=now,
                labels=dict(pool.labels),
                taints=pool.taints,
                capacity_type=pool.capacity_type,
                ready=False,
                empty_since=None if pods else now,
                pods=pods,
            )
        )
    if incoming:
        raise ValueError(f"the plan puts pods on nodes that do not exist: {sorted(incoming)}")
    return replace(state, nodes=tuple(nodes), pending=tuple(pending))


def _free_name(pool: str, taken: set[str]) -> str:
    index = 0
    while f"{pool}-{index}" in taken:
        index += 1
    return f"{pool}-{index}"
