"""The GPUNodePool controller's pass: read the caches, plan, act on one pool, report its status.

A level-based loop, like Karpenter's provisioner and disruption controllers: every pass starts
from what the watch caches hold now (never from the event that woke it), plans the whole cluster
with `decisions.capacity.plan_capacity`, and acts only on the pool it runs for. The Kopf layer
(`handlers/gpunodepool.py`) runs one pass per pool on a timer, after Kopf's indexes have
synced, one pass at a time: a pass acts before the next one plans, so two pools never both add
nodes for the same pods.

What is remembered between passes (`CapacityMemory`) only makes passes better, never correct:
after a restart it starts empty and the cluster itself says the rest.

- nominations: where the last plan put each pending pod, so planning again while added nodes
  come up does not add them twice;
- offerings: pools whose provider raised InsufficientCapacity, unavailable for a TTL, so the
  planner falls back to another pool (on-demand for a spot pool);
- requested: how many nodes each pool's provider says it has, so nodes asked for but not yet
  in the cache count as capacity on its way;
- empty_since: when each node last became empty (after a restart: when it was first seen
  empty, which only delays a scale-down).

Draining is spread over passes: cordon (with our annotation), evict through the Eviction API
(PodDisruptionBudgets answer "not now"), and delete the node once no pod is left on it. Each
pass re-decides: a node the new plan keeps, and that we cordoned, is uncordoned, which is also
what cleans up a cordon left by a crash mid-drain. Just before evicting, the node's pods are
read from the apiserver rather than the cache, and a pod the plan did not know about stops the
drain for this pass.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sparsam import failpoints, metrics
from sparsam.api.conditions import READY, Condition, Status, rfc3339, set_condition
from sparsam.api.costpolicy import CostPolicy
from sparsam.api.gpunodepool import GPUNodePool, LastAction
from sparsam.controllers.repeats import Repeats
from sparsam.controllers.results import Event, PassResult
from sparsam.decisions.capacity import (
    OFFERING_TTL,
    CapacityRules,
    ClusterState,
    Node,
    Offering,
    Plan,
    PlannerSettings,
    Pod,
    PodKey,
    Pool,
    expire_offerings,
    plan_capacity,
    refused_offering,
)
from sparsam.decisions.draining import (
    REASON_POOL_DELETED,
    REASON_SCALE_DOWN,
    PoolNode,
    choose_drains,
)
from sparsam.decisions.effective_policy import resolve_policy
from sparsam.decisions.interruption import InterruptionSignals
from sparsam.decisions.policy import effective_policies
from sparsam.kube.drain import EvictionResult
from sparsam.kube.errors import ApiRefused
from sparsam.kube.observe import Body, NodeFacts, node_from_body
from sparsam.providers.nodepool import (
    InsufficientCapacity,
    NodePoolProvider,
    NotFound,
    ProviderError,
    Transient,
)

#: Every Warning a pool's pass finds again (a stuck drain, a provider that refuses the
#: node template, a pool at maxNodes): said once per REPEAT_EVERY and counted (`repeats`).
REPEATING = None
REPEAT_EVERY = timedelta(minutes=10)


class Drainer(Protocol):
    """Node actuation (`kube.drain.NodeDrainer`, or a fake in unit tests). Refusals raise
    `kube.errors.ApiRefused`."""

    def cordon(self, node: str, reason: str) -> None: ...
    def uncordon(self, node: str) -> None: ...
    def evict(self, namespace: str, name: str) -> EvictionResult: ...
    def pods_on_node(self, node: str) -> Sequence[Pod]:
        """The pods bound to `node` that take room, read from the apiserver, not a cache."""
        ...


@dataclass(frozen=True, slots=True)
class CapacitySettings:
    #: How long a pool that raised InsufficientCapacity gets no new nodes.
    offering_ttl: timedelta = OFFERING_TTL
    signals: InterruptionSignals = field(default_factory=InterruptionSignals)
    planner: PlannerSettings = field(default_factory=PlannerSettings)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the watch caches hold at the start of a pass, read into typed values."""

    pools: Mapping[str, GPUNodePool]
    nodes: Mapping[str, Body]
    #: Node name -> the pods bound to it that still take room.
    bound: Mapping[str, Sequence[Pod]]
    pending: Sequence[Pod]
    policies: Sequence[CostPolicy] = ()
    #: Namespace name -> its labels (for the effective CostPolicy).
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass
class CapacityMemory:
    """What passes remember (see the module docstring); safe to lose."""

    nominations: dict[PodKey, str] = field(default_factory=dict)
    offerings: dict[str, Offering] = field(default_factory=dict)
    requested: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    empty_since: dict[str, datetime] = field(default_factory=dict)


class CapacityController:
    """One instance per operator; `reconcile_pool` is called for every pool, one at a time."""

    def __init__(
        self,
        provider_for: Callable[[GPUNodePool], NodePoolProvider],
        drainer: Drainer,
        settings: CapacitySettings | None = None,
    ) -> None:
        self._provider_for = provider_for
        self._drainer = drainer
        self.settings = settings or CapacitySettings()
        self.memory = CapacityMemory()
        self._repeats = Repeats(REPEATING, every=REPEAT_EVERY)
        self._lock = threading.Lock()

    # --- reading ------------------------------------------------------------------------

    def _facts(self, snap: Snapshot, now: datetime) -> dict[str, NodeFacts]:
        facts: dict[str, NodeFacts] = {}
        for name, body in snap.nodes.items():
            pods = snap.bound.get(name, ())
            if any(not p.daemon for p in pods):
                self.memory.empty_since.pop(name, None)
                since = None
            else:
                since = self.memory.empty_since.setdefault(name, now)
            facts[name] = node_from_body(body, pods, self.settings.signals, since)
        for gone in set(self.memory.empty_since) - set(snap.nodes):
            del self.memory.empty_since[gone]
        return facts

    def state(self, snap: Snapshot, facts: Mapping[str, NodeFacts], now: datetime) -> ClusterState:
        """The planner's view. An interrupted node is off (it takes nothing) and its pods are
        pending again, so the plan provisions their replacement before the node goes. Nodes
        a provider has been asked for but that are not in the cache yet are provisioning."""
        pools = tuple(Pool.from_gpunodepool(p) for p in snap.pools.values())
        nodes: list[Node] = []
        pending = list(snap.pending)
        for fact in facts.values():
            node = fact.node
            if fact.interruption is not None:
                pending.extend(p for p in node.pods if not p.daemon)
                node = replace(node, cordoned=True, pods=tuple(p for p in node.pods if p.daemon))
            nodes.append(node)
        for pool in pools:
            seen = sum(1 for n in nodes if n.pool == pool.name)
            asked, since = self.memory.requested.get(pool.name, (seen, now))
            for index in range(max(0, asked - seen)):
                nodes.append(
                    Node(
                        name=f"{pool.name}/requested-{index}",
                        pool=pool.name,
                        allocatable=pool.node_resources,
                        created=since,
                        labels=dict(pool.labels),
                        taints=pool.taints,
                        capacity_type=pool.capacity_type,
                        ready=False,
                        empty_since=since,
                    )
                )
        live = {p.key for p in pending}
        for key in set(self.memory.nominations) - live:
            del self.memory.nominations[key]
        nominated = [
            replace(p, nominated_node=self.memory.nominations.get(p.key, p.nominated_node))
            for p in pending
        ]
        winners = effective_policies(snap.policies, snap.namespaces)
        return ClusterState(
            pools=pools,
            nodes=tuple(nodes),
            pending=tuple(nominated),
            offerings=dict(self.memory.offerings),
            rules={ns: CapacityRules.from_policy(resolve_policy(p)) for ns, p in winners.items()},
            settings=self.settings.planner,
        )

    # --- one pass -----------------------------------------------------------------------

    def reconcile_pool(self, name: str, snap: Snapshot, now: datetime) -> PassResult:
        """Plan the cluster and act on pool `name`. Raises Transient when the provider or
        the apiserver failed in a way worth retrying soon (nothing is lost: the next pass
        starts over from the caches)."""
        with self._lock:
            result = self._pass(snap.pools[name], snap, now)
            return replace(result, events=self._repeats.quieted(name, result.events, now))

    def retire_pool(
        self, pool: GPUNodePool, snap: Snapshot, now: datetime
    ) -> tuple[int, tuple[Event, ...]]:
        """One step of taking a deleted pool's nodes away, as Karpenter does when a NodePool
        is deleted: drain every node, delete it once empty. Returns how many nodes are left
        (the handler keeps the finalizer until none is) and the Events."""
        with self._lock:
            facts = self._facts(snap, now)
            events: list[Event] = []
            provider = self._provider_for(pool)
            left = 0
            for _, fact in sorted(facts.items()):
                if fact.node.pool == pool.metadata.name and not self._drain(
                    pool, provider, fact, REASON_POOL_DELETED, events
                ):
                    left += 1
            self.memory.requested.pop(pool.metadata.name, None)
            self.memory.offerings.pop(pool.metadata.name, None)
            return left, self._repeats.quieted(pool.metadata.name, events, now)

    def _pass(self, pool: GPUNodePool, snap: Snapshot, now: datetime) -> PassResult:
        name = pool.metadata.name
        self._expire_offerings(now)
        facts = self._facts(snap, now)
        plan = plan_capacity(self.state(snap, facts, now), now)
        for key, ref in plan.placements.items():
            # Only real nodes: a node asked for but not yet seen has no name to keep.
            if isinstance(ref, str) and ref in facts:
                self.memory.nominations[key] = ref
        events: list[Event] = []
        status: dict[str, Any] = {}
        last_action: LastAction | None = pool.status.last_action
        ready: tuple[Status, str, str] = ("True", "Provisioned", "The provider answers.")

        offering = self.memory.offerings.get(name)
        if offering is not None and offering.unavailable_until is not None:
            ready = (
                "False",
                "InsufficientCapacity",
                f"the provider had no capacity at {rfc3339(offering.last_failure or now)}; "
                f"no new nodes here before {rfc3339(offering.unavailable_until)}",
            )
        provider = self._provider_for(pool)
        adding = plan.add.get(name, 0)
        if adding:
            try:
                names = provider.scale_up(pool, adding)
            except InsufficientCapacity as exc:
                self.memory.offerings[name] = refused_offering(now, self.settings.offering_ttl)
                ready = ("False", "InsufficientCapacity", str(exc))
                events.append(Event("Warning", "InsufficientCapacity", str(exc)))
                metrics.CAPACITY_ACTIONS.labels(name, "InsufficientCapacity").inc()
            except Transient:
                raise
            except ProviderError as exc:
                ready = ("False", "ProviderError", str(exc))
                events.append(Event("Warning", "ProviderError", str(exc)))
            else:
                reason = plan.add_reasons.get(name, f"added {adding} node(s)")
                self._nominate(plan, name, names)
                last_action = LastAction("ScaleUp", reason, rfc3339(now))
                events.append(Event("Normal", "ScaleUp", reason))
                metrics.CAPACITY_ACTIONS.labels(name, "ScaleUp").inc(adding)
        try:
            self.memory.requested[name] = (provider.size(pool), now)
        except Transient:
            raise
        except ProviderError as exc:  # e.g. its MachineDeployment is gone: say so, go on
            ready = ("False", "ProviderError", str(exc))

        ours = {n: f for n, f in facts.items() if f.node.pool == name}
        choice = choose_drains(
            [PoolNode(n, f.interruption, f.draining is not None) for n, f in ours.items()], plan
        )
        for node_name in choice.uncordon:
            try:
                self._drainer.uncordon(node_name)
            except ApiRefused as exc:
                events.append(Event("Warning", "DrainFailed", f"node {node_name}: {exc}"))
                continue
            events.append(Event("Normal", "Uncordoned", f"node {node_name} is needed again"))
        for drain in choice.drain:
            node_name = drain.node
            if self._drain(pool, provider, ours[node_name], drain.why, events):
                reason = f"removed node {node_name}: {drain.because}"
                last_action = LastAction("ScaleDown", reason, rfc3339(now))
                events.append(Event("Normal", "ScaleDown", reason))
                metrics.CAPACITY_ACTIONS.labels(name, "ScaleDown").inc()

        status.update(self._pool_status(pool, ours, len(choice.drain), ready, now))
        if last_action is not None:
            status["lastAction"] = {
                k: v
                for k, v in (
                    ("type", last_action.type),
                    ("reason", last_action.reason),
                    ("time", last_action.time),
                )
                if v is not None
            }
        return PassResult(status, tuple(events))

    def _expire_offerings(self, now: datetime) -> None:
        self.memory.offerings.update(expire_offerings(self.memory.offerings, now))

    def _nominate(self, plan: Plan, pool: str, names: Sequence[str]) -> None:
        """Pods the plan put on this pool's new nodes are nominated to them by name (kwok
        names nodes at once; Cluster API does not, and the next plan places them afresh)."""
        for key, ref in plan.placements.items():
            if not isinstance(ref, str) and ref.pool == pool and ref.index < len(names):
                self.memory.nominations[key] = names[ref.index]

    def _drain(
        self,
        pool: GPUNodePool,
        provider: NodePoolProvider,
        fact: NodeFacts,
        why: str,
        events: list[Event],
    ) -> bool:
        """One step of draining a node; True once it is gone. A step the apiserver refuses
        is reported as an Event and tried again on the next pass."""
        try:
            node = fact.node
            if fact.draining is None:
                self._drainer.cordon(node.name, why)
                failpoints.hit("capacity.after-cordon")
                events.append(Event("Normal", "Cordoned", f"node {node.name}: {why}"))
            live = [p for p in self._drainer.pods_on_node(node.name) if not p.daemon]
            known = {p.key for p in node.pods}
            if why == REASON_SCALE_DOWN and any(p.key not in known for p in live):
                # A pod arrived after the cache we planned from: plan again before evicting.
                return False
            blocked = 0
            for pod in live:
                if self._drainer.evict(pod.namespace, pod.name) == "blocked":
                    blocked += 1
            if blocked:
                events.append(
                    Event(
                        "Warning",
                        "EvictionBlocked",
                        f"node {node.name}: {blocked} pod(s) wait for a PodDisruptionBudget",
                    )
                )
            if live:
                return False
            with contextlib.suppress(NotFound):  # gone already, which is what we wanted
                provider.delete_node(pool, node.name)
            self.memory.empty_since.pop(node.name, None)
            return True
        except ApiRefused as exc:
            events.append(Event("Warning", "DrainFailed", f"node {fact.node.name}: {exc}"))
            return False

    def _pool_status(
        self,
        pool: GPUNodePool,
        ours: Mapping[str, NodeFacts],
        draining: int,
        ready: tuple[Status, str, str],
        now: datetime,
    ) -> dict[str, Any]:
        name = pool.metadata.name
        asked, _ = self.memory.requested.get(name, (len(ours), now))
        allocated = sum(p.requests.gpus for f in ours.values() for p in f.node.pods if not p.daemon)
        gpus = len(ours) * pool.spec.node_template.gpus_per_node
        conditions: tuple[Condition, ...] = set_condition(
            pool.status.conditions,
            READY,
            ready[0],
            ready[1],
            ready[2],
            now,
            pool.metadata.generation,
        )
        metrics.POOL_NODES.labels(name).set(len(ours))
        metrics.POOL_GPUS.labels(name).set(gpus)
        metrics.POOL_ALLOCATED_GPUS.labels(name).set(allocated)
        return {
            "observedGeneration": pool.metadata.generation,
            "nodes": len(ours),
            "readyNodes": sum(1 for f in ours.values() if f.node.ready),
            # What the provider holds (this pass's additions included), less what drains.
            "desiredNodes": max(0, max(asked, len(ours)) - draining),
            "allocatedGPUs": allocated,
            # At most 1 (the CRD's bound; a write above it is refused whole): the caches can
            # briefly count a pod the scheduler no longer does (1.5 was seen with a pod
            # terminating beside its replacement).
            "utilization": min(1.0, round(allocated / gpus, 4)) if gpus else 0.0,
            "conditions": [cond.to_raw() for cond in conditions],
        }
