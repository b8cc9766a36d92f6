"""The capacity planner, case by case: scale-up by pool, taints and selectors, spot with
on-demand fallback, what fits nowhere, maxNodes and minNodes, scale-down and what blocks it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sparsam.api import constants as c
from sparsam.api.common import ObjectMeta, SpotPolicy
from sparsam.api.costpolicy import CostPolicy, CostPolicySpec, CostPolicyStatus, LabelSelector
from sparsam.api.costpolicy import Spot as SpotSpec
from sparsam.api.gpunodepool import (
    CapacityType,
    GPUNodePool,
    GPUNodePoolSpec,
    GPUNodePoolStatus,
    KwokProvider,
    NodeTemplate,
    Provider,
    Taint,
)
from sparsam.api.parse import Quantity
from sparsam.decisions.capacity import (
    CapacityRules,
    ClusterState,
    NewNode,
    Node,
    Offering,
    Plan,
    Pod,
    Pool,
    Resources,
    apply_plan,
    plan_capacity,
)
from sparsam.decisions.effective_policy import resolve_policy
from sparsam.decisions.scheduling import NodeSelectorRequirement, NodeSelectorTerm, Toleration

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
TOLERATE_GPU = Toleration(key=c.TAINT_GPU, operator="Exists", effect="NoSchedule")
TOLERATE_SPOT = Toleration(key=c.TAINT_SPOT, operator="Equal", value=c.CAPACITY_SPOT)
BOTH = (TOLERATE_GPU, TOLERATE_SPOT)


def pool(
    name: str,
    capacity: CapacityType = "spot",
    *,
    gpu: str = "NVIDIA-A10G",
    gpus: int = 4,
    price: float = 2.0,
    max_nodes: int = 10,
    min_nodes: int = 0,
    scale_down_after: timedelta = 10 * MIN,
    labels: Mapping[str, str] | None = None,
    taints: tuple[Taint, ...] | None = None,
) -> Pool:
    """A pool built the way the controller builds it: from a GPUNodePool."""
    spec = GPUNodePoolSpec(
        provider=Provider(kwok=KwokProvider()),
        node_template=NodeTemplate(
            gpu_type=gpu,
            gpus_per_node=gpus,
            cpu=Quantity(12 * gpus),
            memory=Quantity(48 * gpus * 2**30),
            labels=labels,
            taints=taints,
        ),
        capacity_type=capacity,
        price_per_hour=price,
        max_nodes=max_nodes,
        min_nodes=min_nodes,
        scale_down_after=scale_down_after,
    )
    meta = ObjectMeta(name=name, namespace="", uid=f"uid-{name}", generation=1, labels={})
    return Pool.from_gpunodepool(GPUNodePool(meta, spec, GPUNodePoolStatus()))


def pod(
    name: str,
    gpus: int = 1,
    *,
    spot: SpotPolicy = "Prefer",
    namespace: str = "team",
    tolerations: tuple[Toleration, ...] = BOTH,
    selector: Mapping[str, str] | None = None,
    affinity: tuple[NodeSelectorTerm, ...] = (),
    cpu: str | None = None,
    training_worker: bool = False,
    fresh_checkpoint: bool = False,
    do_not_disrupt: bool = False,
) -> Pod:
    return Pod(
        name=name,
        namespace=namespace,
        requests=Resources.of(gpus, cpu or str(4 * max(gpus, 1)), f"{16 * max(gpus, 1)}Gi"),
        node_selector=dict(selector or {}),
        tolerations=tolerations,
        affinity=affinity,
        spot=spot,
        training_worker=training_worker,
        fresh_checkpoint=fresh_checkpoint,
        do_not_disrupt=do_not_disrupt,
    )


def node(
    name: str,
    of: Pool,
    *pods: Pod,
    age: timedelta = 60 * MIN,
    empty_for: timedelta | None = None,
    ready: bool = True,
    cordoned: bool = False,
) -> Node:
    return Node(
        name=name,
        pool=of.name,
        allocatable=of.node_resources,
        created=NOW - age,
        labels={**of.labels, "kubernetes.io/hostname": name},
        taints=of.taints,
        capacity_type=of.capacity_type,
        ready=ready,
        cordoned=cordoned,
        empty_since=None if empty_for is None else NOW - empty_for,
        pods=pods,
    )


def pods(count: int, gpus: int = 1, prefix: str = "p", **kwargs: Any) -> tuple[Pod, ...]:
    return tuple(pod(f"{prefix}{i}", gpus, **kwargs) for i in range(count))


SPOT = pool("a10g-spot", "spot", price=2.27)
ON_DEMAND = pool("a10g-on-demand", "on-demand", price=5.67)
L40S = pool("l40s-on-demand", "on-demand", gpu="NVIDIA-L40S", gpus=1, price=1.86)
CPU_ONLY = pod("cpu", 0, tolerations=(), cpu="2")


@dataclass(frozen=True)
class Case:
    pools: tuple[Pool, ...]
    pending: tuple[Pod, ...] = ()
    nodes: tuple[Node, ...] = ()
    offerings: Mapping[str, Offering] = field(default_factory=dict)
    rules: Mapping[str, CapacityRules] = field(default_factory=dict)
    add: Mapping[str, int] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    #: pod name -> a phrase its unschedulable reason must contain
    unschedulable: Mapping[str, str] = field(default_factory=dict)

    def state(self) -> ClusterState:
        return ClusterState(
            pools=self.pools,
            nodes=self.nodes,
            pending=self.pending,
            offerings=self.offerings,
            rules=self.rules,
        )


def check(case: Case) -> Plan:
    plan = plan_capacity(case.state(), NOW)
    assert dict(plan.add) == dict(case.add)
    assert plan.remove == case.remove
    assert {key[1] for key in plan.unschedulable} == set(case.unschedulable)
    for (_, name), reason in plan.unschedulable.items():
        assert case.unschedulable[name] in reason, reason
    assert set(plan.add_reasons) == set(plan.add)
    assert set(plan.remove_reasons) == set(plan.remove)
    # Whatever the case, planning again on the plan's own result changes nothing: once the
    # pods are bound, and while the new nodes come up with the pods still pending.
    for bind in (True, False):
        again = plan_capacity(apply_plan(case.state(), plan, NOW, bind=bind), NOW)
        assert again.empty, again
    return plan


SCALE_UP = [
    pytest.param(Case((SPOT,), pods(1), add={"a10g-spot": 1}), id="one-gpu-pod-one-node"),
    pytest.param(Case((SPOT,), pods(5), add={"a10g-spot": 2}), id="five-pods-pack-into-two"),
    pytest.param(
        Case((SPOT,), pods(2, 2) + pods(4, 1, prefix="s"), add={"a10g-spot": 2}),
        id="mixed-sizes-pack-first-fit-decreasing",
    ),
    pytest.param(
        Case(
            (SPOT, L40S), pods(1, selector={c.LABEL_GPU_PRODUCT: "NVIDIA-L40S"}), add={L40S.name: 1}
        ),
        id="selector-picks-the-gpu-type",
    ),
    pytest.param(
        Case(
            (SPOT, pool("west", "spot", labels={"topology.kubernetes.io/zone": "us-west-2a"})),
            pods(
                1,
                affinity=(
                    NodeSelectorTerm(
                        (
                            NodeSelectorRequirement(
                                "topology.kubernetes.io/zone", "In", ("us-west-2a",)
                            ),
                        )
                    ),
                ),
            ),
            add={"west": 1},
        ),
        id="affinity-in-picks-the-zone",
    ),
    pytest.param(
        Case(
            (SPOT, pool("z-spot", "spot", price=1.0)),
            pods(
                1,
                affinity=(
                    NodeSelectorTerm(
                        (NodeSelectorRequirement(c.LABEL_POOL, "NotIn", ("z-spot",)),)
                    ),
                ),
            ),
            add={SPOT.name: 1},
        ),
        id="affinity-not-in-excludes-the-cheaper-pool",
    ),
    pytest.param(
        Case((SPOT, ON_DEMAND), pods(1, tolerations=(TOLERATE_GPU,)), add={ON_DEMAND.name: 1}),
        id="spot-taint-not-tolerated-goes-on-demand",
    ),
    pytest.param(
        Case(
            (SPOT, pool("dedicated", taints=(Taint("team", "NoSchedule", "ml"),), price=0.5)),
            pods(1),
            add={SPOT.name: 1},
        ),
        id="template-taint-excludes-the-cheaper-pool",
    ),
    pytest.param(
        Case(
            (SPOT, pool("soft", taints=(Taint("team", "PreferNoSchedule", "ml"),), price=0.5)),
            pods(1),
            add={"soft": 1},
        ),
        id="prefer-no-schedule-taint-does-not-exclude",
    ),
    pytest.param(
        Case((SPOT, L40S), pods(4, 1, spot="Never"), add={L40S.name: 4}),
        id="cheapest-pool-for-the-group",
    ),
    pytest.param(
        Case((L40S, ON_DEMAND), pods(4, 1, spot="Never"), add={ON_DEMAND.name: 1}),
        id="one-big-node-cheaper-than-four-small",
    ),
    pytest.param(
        Case((SPOT,), pods(3), nodes=(node("n1", SPOT, pod("old", 1)),)),
        id="fits-existing-free-room-adds-nothing",
    ),
    pytest.param(
        Case((SPOT,), pods(3), nodes=(node("n1", SPOT, age=MIN, ready=False),)),
        id="provisioning-node-counts-as-capacity",
    ),
    pytest.param(
        Case(
            (SPOT,),
            pods(3),
            nodes=(node("n1", SPOT, age=30 * MIN, ready=False),),
            add={SPOT.name: 1},
            remove=("n1",),
        ),
        id="stuck-not-ready-node-is-no-capacity-and-goes",
    ),
    pytest.param(
        Case(
            (SPOT,),
            pods(3),
            nodes=(node("n1", SPOT, pod("old"), cordoned=True),),
            add={SPOT.name: 1},
        ),
        id="cordoned-node-takes-no-pods",
    ),
    pytest.param(
        Case(
            (SPOT,),
            pods(2, spot="Never"),
            nodes=(node("n1", SPOT, pod("old")),),
            unschedulable={"p0": "spot policy is Never", "p1": "spot policy is Never"},
        ),
        id="never-pods-take-no-spot-room",
    ),
    pytest.param(
        Case((SPOT, pool("big", gpus=8, price=4.0)), pods(1, 8), add={"big": 1}),
        id="only-the-big-pool-holds-an-8-gpu-pod",
    ),
    pytest.param(
        Case((SPOT, L40S), (pod("hi", 1, spot="Never"),), add={L40S.name: 1}),
        id="never-skips-cheaper-spot",
    ),
    pytest.param(
        Case(
            (SPOT, L40S),
            pods(2, namespace="restricted"),
            rules={"restricted": CapacityRules(allowed_gpu_types=frozenset({"NVIDIA-L40S"}))},
            add={L40S.name: 2},
        ),
        id="allowed-gpu-types-honoured",
    ),
    pytest.param(
        Case((pool("fixed", min_nodes=2),), add={"fixed": 2}), id="min-nodes-adds-empty-nodes"
    ),
    pytest.param(
        Case((pool("fixed", min_nodes=2),), pods(6), add={"fixed": 2}),
        id="min-nodes-take-pending-pods-first",
    ),
    pytest.param(
        Case((pool("fixed", min_nodes=2, max_nodes=1),), add={"fixed": 1}),
        id="min-nodes-never-above-max",
    ),
]


@pytest.mark.parametrize("case", SCALE_UP)
def test_scale_up(case: Case) -> None:
    check(case)


FALLBACK = 5 * MIN

SPOT_CHOICE = [
    pytest.param(Case((SPOT, ON_DEMAND), pods(1), add={SPOT.name: 1}), id="prefer-goes-spot"),
    pytest.param(
        Case(
            (SPOT, ON_DEMAND),
            pods(1),
            offerings={SPOT.name: Offering(unavailable_until=NOW + MIN, last_failure=NOW - MIN)},
            add={ON_DEMAND.name: 1},
        ),
        id="prefer-falls-back-when-spot-unavailable",
    ),
    pytest.param(
        Case(
            (SPOT, ON_DEMAND),
            pods(1),
            offerings={SPOT.name: Offering(last_failure=NOW - FALLBACK + MIN)},
            add={ON_DEMAND.name: 1},
        ),
        id="prefer-falls-back-within-the-window",
    ),
    pytest.param(
        Case(
            (SPOT, ON_DEMAND),
            pods(1),
            offerings={SPOT.name: Offering(last_failure=NOW - FALLBACK)},
            add={SPOT.name: 1},
        ),
        id="prefer-returns-to-spot-after-the-window",
    ),
    pytest.param(
        Case(
            (SPOT, ON_DEMAND),
            pods(1),
            offerings={SPOT.name: Offering(last_failure=NOW - 2 * MIN)},
            rules={"team": CapacityRules(on_demand_fallback_after=MIN)},
            add={SPOT.name: 1},
        ),
        id="the-namespace-window-applies",
    ),
    pytest.param(
        Case(
            (SPOT, ON_DEMAND),
            pods(1),
            offerings={SPOT.name: Offering(unavailable_until=NOW, last_failure=NOW - 10 * MIN)},
            add={SPOT.name: 1},
        ),
        id="spot-available-again-at-its-time",
    ),
    pytest.param(
        Case(
            (SPOT,),
            pods(1),
            offerings={SPOT.name: Offering(last_failure=NOW - MIN)},
            add={SPOT.name: 1},
        ),
        id="prefer-uses-failing-spot-when-there-is-no-on-demand-pool",
    ),
    pytest.param(
        Case(
            (pool("small-spot", max_nodes=1), ON_DEMAND),
            pods(8),
            add={
                "small-spot": 1,
                ON_DEMAND.name: 1,
            },
        ),
        id="prefer-overflows-to-on-demand-at-max-nodes",
    ),
    pytest.param(
        Case(
            (SPOT, ON_DEMAND),
            pods(1, spot="Require"),
            offerings={SPOT.name: Offering(last_failure=NOW - MIN)},
            add={SPOT.name: 1},
        ),
        id="require-stays-on-failing-spot",
    ),
    pytest.param(
        Case(
            (SPOT, ON_DEMAND),
            pods(1, spot="Require"),
            offerings={SPOT.name: Offering(unavailable_until=NOW + MIN)},
            unschedulable={"p0": "no capacity until 2026-05-01T12:01:00+00:00"},
        ),
        id="require-never-on-demand",
    ),
    pytest.param(
        Case((SPOT, ON_DEMAND), pods(1, spot="Never"), add={ON_DEMAND.name: 1}),
        id="never-never-spot",
    ),
    pytest.param(
        Case(
            (SPOT,),
            pods(1, spot="Never"),
            unschedulable={"p0": "is spot, and the pod's spot policy is Never"},
        ),
        id="never-with-only-spot-is-unschedulable",
    ),
]


@pytest.mark.parametrize("case", SPOT_CHOICE)
def test_spot_choice(case: Case) -> None:
    check(case)


UNSCHEDULABLE = [
    pytest.param(
        Case(
            (SPOT, pool("big", gpus=8)),
            pods(1, 16),
            unschedulable={"p0": "needs 16 GPUs, the largest pool node has 8 GPUs"},
        ),
        id="bigger-than-any-node",
    ),
    pytest.param(
        Case(
            (SPOT,),
            pods(1, 1, cpu="100"),
            unschedulable={"p0": "needs 100 CPUs, the largest pool node has 48 CPUs"},
        ),
        id="more-cpu-than-any-node",
    ),
    pytest.param(
        Case(
            (SPOT, ON_DEMAND),
            (CPU_ONLY,),
            unschedulable={
                "cpu": f"every pool has taint {c.TAINT_GPU}=present:NoSchedule, which the pod"
            },
        ),
        id="no-pool-tolerated",
    ),
    pytest.param(
        Case(
            (SPOT, L40S),
            pods(1, namespace="restricted"),
            rules={"restricted": CapacityRules(allowed_gpu_types=frozenset({"NVIDIA-H100"}))},
            unschedulable={"p0": "not in allowedGPUTypes (NVIDIA-H100)"},
        ),
        id="gpu-type-not-allowed",
    ),
    pytest.param(
        Case(
            (SPOT,),
            pods(1, selector={"team": "ml"}),
            unschedulable={"p0": "does not match nodeSelector team=ml"},
        ),
        id="selector-matches-no-pool",
    ),
    pytest.param(
        Case(
            (pool("capped", max_nodes=2),),
            pods(10, 1),
            add={"capped": 2},
            unschedulable={f"p{i}": "pool capped is at maxNodes (2)" for i in range(8, 10)},
        ),
        id="max-nodes-caps-and-reports",
    ),
    pytest.param(
        Case(
            (pool("capped", max_nodes=2),),
            pods(5, 4),
            nodes=(node("n1", pool("capped"), pod("old", 4)),),
            add={"capped": 1},
            unschedulable={f"p{i}": "at maxNodes (2)" for i in range(1, 5)},
        ),
        id="existing-nodes-count-toward-max",
    ),
    pytest.param(
        Case(
            (pool("off", max_nodes=0),), pods(1), unschedulable={"p0": "is disabled (maxNodes 0)"}
        ),
        id="max-nodes-zero-disables",
    ),
    pytest.param(
        Case((), pods(1), unschedulable={"p0": "there is no GPUNodePool"}), id="no-pools-at-all"
    ),
]


@pytest.mark.parametrize("case", UNSCHEDULABLE)
def test_unschedulable_is_reported_and_adds_only_what_fits(case: Case) -> None:
    check(case)


SCALE_DOWN = [
    pytest.param(
        Case((SPOT,), nodes=(node("n1", SPOT, empty_for=9 * MIN),)), id="empty-before-timeout"
    ),
    pytest.param(
        Case((SPOT,), nodes=(node("n1", SPOT, empty_for=10 * MIN),), remove=("n1",)),
        id="empty-at-timeout",
    ),
    pytest.param(
        Case((SPOT,), nodes=(node("n1", SPOT, age=30 * MIN),), remove=("n1",)),
        id="never-used-counts-from-creation",
    ),
    pytest.param(
        Case((SPOT,), nodes=(node("n1", SPOT, age=5 * MIN),)), id="never-used-young-node-stays"
    ),
    pytest.param(
        Case(
            (pool("kept", min_nodes=1),),
            nodes=(node("n1", pool("kept"), empty_for=60 * MIN),),
        ),
        id="min-nodes-blocks-removal",
    ),
    pytest.param(
        Case(
            (pool("kept", min_nodes=1),),
            nodes=(
                node("n1", pool("kept"), empty_for=60 * MIN),
                node("n2", pool("kept"), empty_for=30 * MIN),
            ),
            remove=("n1",),
        ),
        id="removes-down-to-min-longest-idle-first",
    ),
    pytest.param(
        Case(
            (SPOT,),
            nodes=(
                node("n1", SPOT, empty_for=20 * MIN),
                node("n2", SPOT, empty_for=20 * MIN),
            ),
            remove=("n1", "n2"),
        ),
        id="pool-goes-to-zero",
    ),
    pytest.param(
        Case(
            (SPOT,),
            nodes=(
                Node("cpu-1", None, Resources.of(0, 8, "32Gi"), NOW - 99 * MIN),
                node("n1", SPOT, empty_for=20 * MIN),
            ),
            remove=("n1",),
        ),
        id="unmanaged-node-never-removed",
    ),
    pytest.param(
        Case(
            (SPOT,),
            nodes=(node("n1", SPOT, pod("a", 1)), node("n2", SPOT, pod("b", 2))),
            remove=("n1",),
        ),
        id="under-used-node-moves-to-a-busy-one",
    ),
    pytest.param(
        Case(
            (SPOT,),
            nodes=(node("n1", SPOT, pod("a", 1)), node("n2", SPOT, pod("b", 2), pod("c", 2))),
        ),
        id="under-used-pods-fit-nowhere-else",
    ),
    pytest.param(
        Case(
            (SPOT,),
            nodes=(
                node("n1", SPOT, pod("a", 1, do_not_disrupt=True)),
                node("n2", SPOT, pod("b", 2)),
            ),
        ),
        id="do-not-disrupt-blocks",
    ),
    pytest.param(
        Case(
            (SPOT,),
            nodes=(
                node("n1", SPOT, pod("a", 1, training_worker=True)),
                node("n2", SPOT, pod("b", 2)),
            ),
        ),
        id="training-worker-without-checkpoint-blocks",
    ),
    pytest.param(
        Case(
            (SPOT,),
            nodes=(
                node("n1", SPOT, pod("a", 1, training_worker=True, fresh_checkpoint=True)),
                node("n2", SPOT, pod("b", 2)),
            ),
            remove=("n1",),
        ),
        id="training-worker-with-fresh-checkpoint-moves",
    ),
    pytest.param(
        Case(
            (SPOT, ON_DEMAND),
            nodes=(
                node("n1", SPOT, pod("a", 1, spot="Require")),
                node("n2", ON_DEMAND, pod("b", 2)),
            ),
        ),
        id="moved-pods-keep-their-spot-policy",
    ),
    pytest.param(
        Case((SPOT,), nodes=(node("n1", SPOT, pod("a", 1)), node("n2", SPOT, empty_for=MIN))),
        id="pods-are-not-moved-onto-idle-nodes",
    ),
    pytest.param(
        Case(
            (SPOT,),
            nodes=(node("n1", SPOT, pod("a", 1), age=5 * MIN), node("n2", SPOT, pod("b", 2))),
        ),
        id="young-under-used-node-stays",
    ),
    pytest.param(
        Case(
            (SPOT,),
            nodes=(node("n1", SPOT, pod("a", 2)), node("n2", SPOT, pod("b", 2))),
        ),
        id="half-used-is-not-under-used",
    ),
    pytest.param(
        Case(
            (SPOT,),
            pending=pods(1),
            nodes=(node("n1", SPOT, empty_for=60 * MIN),),
        ),
        id="empty-node-that-takes-a-pending-pod-stays",
    ),
    pytest.param(
        Case(
            (pool("capped", max_nodes=2),),
            pending=(pod("big", 4),),
            nodes=(
                node("n1", pool("capped"), pod("a", 1)),
                node("n2", pool("capped"), pod("b", 2)),
            ),
            add={"capped": 1},
            remove=("n1",),
        ),
        id="consolidation-makes-room-under-max-nodes",
    ),
]


@pytest.mark.parametrize("case", SCALE_DOWN)
def test_scale_down(case: Case) -> None:
    check(case)


def test_pods_in_free_room_are_placed_on_that_node() -> None:
    plan = plan_capacity(
        ClusterState((SPOT,), nodes=(node("n1", SPOT, pod("old")),), pending=pods(3)), NOW
    )
    assert plan.empty
    assert set(plan.placements.values()) == {"n1"}


def test_placements_name_new_nodes_and_apply_names_them() -> None:
    state = ClusterState((SPOT,), pending=pods(5))
    plan = plan_capacity(state, NOW)
    assert sorted(set(plan.placements.values()), key=str) == [
        NewNode(SPOT.name, 0),
        NewNode(SPOT.name, 1),
    ]
    after = apply_plan(state, plan, NOW)
    assert after.pending == ()
    assert [(n.name, n.ready, len(n.pods)) for n in after.nodes] == [
        ("a10g-spot-0", False, 4),
        ("a10g-spot-1", False, 1),
    ]
    assert after.nodes[0].labels[c.LABEL_CAPACITY_TYPE] == "spot"
    named = apply_plan(state, plan, NOW, name_new_node=lambda ref: f"sim-{ref.index}")
    assert [n.name for n in named.nodes] == ["sim-0", "sim-1"]


def test_replanning_while_the_nodes_come_up_adds_nothing() -> None:
    big, small = pool("big", gpus=4, price=3.0), pool("small", gpus=2, price=2.0)
    only_small = pod("b", 2, selector={c.LABEL_POOL: "small"})
    state = ClusterState((big, small), pending=(*pods(2, 2, prefix="a"), only_small))
    plan = plan_capacity(state, NOW)
    assert plan.add == {"big": 1, "small": 1}
    coming_up = apply_plan(state, plan, NOW, bind=False)
    assert sorted((p.name, p.nominated_node) for p in coming_up.pending) == [
        ("a0", "big-0"),
        ("a1", "big-0"),
        ("b", "small-0"),
    ]
    assert plan_capacity(coming_up, NOW).empty
    # Without the nominations the packing starts over, puts an `a` pod into the tighter empty
    # small node, and `b` needs another one: the nominations are what keeps this stable.
    forgotten = tuple(replace(p, nominated_node=None) for p in coming_up.pending)
    assert plan_capacity(replace(coming_up, pending=forgotten), NOW).add == {"small": 1}


def test_a_nomination_that_no_longer_fits_is_ignored() -> None:
    state = ClusterState(
        (SPOT,),
        nodes=(node("n1", SPOT, pod("old", 4)),),
        pending=(replace(pod("p", 1), nominated_node="n1"),),
    )
    assert plan_capacity(state, NOW).add == {SPOT.name: 1}


def test_moves_are_applied() -> None:
    state = ClusterState(
        (SPOT,), nodes=(node("n1", SPOT, pod("a", 1)), node("n2", SPOT, pod("b", 2)))
    )
    plan = plan_capacity(state, NOW)
    assert plan.moves == {("team", "a"): "n2"}
    after = apply_plan(state, plan, NOW)
    assert [(n.name, sorted(p.name for p in n.pods)) for n in after.nodes] == [("n2", ["a", "b"])]


def test_higher_priority_gets_capacity_first_under_max_nodes() -> None:
    low = tuple(replace(p, priority=0) for p in pods(4, 4, prefix="low"))
    high = tuple(replace(p, priority=100) for p in pods(2, 4, prefix="high"))
    plan = plan_capacity(ClusterState((pool("capped", max_nodes=2),), pending=low + high), NOW)
    assert {name for _, name in plan.unschedulable} == {"low0", "low1", "low2", "low3"}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param(
            ClusterState((SPOT,), pending=pods(5)),
            "add 2 nodes: 5 pending pods (5 GPUs) have no room on existing nodes",
            id="pending",
        ),
        pytest.param(
            ClusterState((pool("fixed", min_nodes=1),)),
            "add 1 node: 1 to keep minNodes 1",
            id="min-nodes",
        ),
        pytest.param(
            ClusterState(
                (SPOT, ON_DEMAND),
                pending=pods(1),
                offerings={SPOT.name: Offering(last_failure=NOW - 2 * MIN)},
            ),
            "add 1 node: 1 pending pod (1 GPU) has no room on existing nodes; on-demand fallback: "
            "spot pool a10g-spot failed 2m ago (onDemandFallbackAfter 5m)",
            id="fallback",
        ),
    ],
)
def test_add_reason(state: ClusterState, expected: str) -> None:
    (reason,) = plan_capacity(state, NOW).add_reasons.values()
    assert reason == expected


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        pytest.param(
            (node("n1", SPOT, empty_for=12 * MIN),),
            "empty for 12m (scaleDownAfter 10m)",
            id="empty",
        ),
        pytest.param(
            (node("n1", SPOT, pod("a", 1)), node("n2", SPOT, pod("b", 2))),
            "under-used (25% requested); its pod fits elsewhere",
            id="under-used",
        ),
    ],
)
def test_remove_reason(nodes: tuple[Node, ...], expected: str) -> None:
    plan = plan_capacity(ClusterState((SPOT,), nodes=nodes), NOW)
    assert plan.remove_reasons == {"n1": expected}


def test_pool_from_gpunodepool_has_the_template_labels_and_taints() -> None:
    assert SPOT.node_resources == Resources(4, 48_000, 192 * 2**30)
    assert SPOT.labels == {
        c.LABEL_OS: "linux",
        c.LABEL_ARCH: "amd64",
        c.LABEL_POOL: "a10g-spot",
        c.LABEL_GPU_PRODUCT: "NVIDIA-A10G",
        c.LABEL_GPU_COUNT: "4",
        c.LABEL_CAPACITY_TYPE: "spot",
    }
    assert SPOT.taints == (
        Taint(c.TAINT_GPU, "NoSchedule", "present"),
        Taint(c.TAINT_SPOT, "NoSchedule", "spot"),
    )
    assert ON_DEMAND.taints == (Taint(c.TAINT_GPU, "NoSchedule", "present"),)


def test_capacity_rules_from_the_effective_policy() -> None:
    meta = ObjectMeta(name="p", namespace="", uid="u", generation=1, labels={})
    spec = CostPolicySpec(
        namespace_selector=LabelSelector(),
        spot=SpotSpec(on_demand_fallback_after=2 * MIN),
        allowed_gpu_types=("NVIDIA-L40S",),
    )
    effective = resolve_policy(CostPolicy(meta, spec, CostPolicyStatus()))
    rules = CapacityRules.from_policy(effective)
    assert rules == CapacityRules(frozenset({"NVIDIA-L40S"}), 2 * MIN)
    assert CapacityRules.from_policy(resolve_policy(None)) == CapacityRules()


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        pytest.param(Toleration(operator="Exists"), Taint("any", "NoExecute", "x"), True, id="all"),
        pytest.param(Toleration(key="k", operator="Exists"), Taint("k", "NoSchedule", "v"), True,
                     id="exists-any-value"),
        pytest.param(Toleration(key="k", value="v"), Taint("k", "NoSchedule", "v"), True,
                     id="equal-value"),
        pytest.param(Toleration(key="k", value="w"), Taint("k", "NoSchedule", "v"), False,
                     id="other-value"),
        pytest.param(Toleration(key="k", value="v", effect="NoExecute"),
                     Taint("k", "NoSchedule", "v"), False, id="other-effect"),
        pytest.param(Toleration(key="k"), Taint("k", "NoSchedule"), True, id="empty-value"),
        pytest.param(Toleration(value="v"), Taint("k", "NoSchedule", "v"), False,
                     id="empty-key-needs-exists"),
    ],
)  # fmt: skip
def test_toleration_matches_the_kubernetes_way(
    toleration: Toleration, taint: Taint, tolerated: bool
) -> None:
    assert toleration.tolerates(taint) is tolerated


@pytest.mark.parametrize(
    ("requirement", "labels", "matches"),
    [
        pytest.param(NodeSelectorRequirement("k", "In", ("a", "b")), {"k": "b"}, True, id="in"),
        pytest.param(NodeSelectorRequirement("k", "In", ("a",)), {}, False, id="in-missing"),
        pytest.param(NodeSelectorRequirement("k", "NotIn", ("a",)), {"k": "a"}, False,
                     id="not-in"),
        pytest.param(NodeSelectorRequirement("k", "NotIn", ("a",)), {}, True,
                     id="not-in-missing"),
        pytest.param(NodeSelectorRequirement("k", "Exists"), {"k": ""}, True, id="exists"),
        pytest.param(NodeSelectorRequirement("k", "DoesNotExist"), {"k": "a"}, False,
                     id="does-not-exist"),
    ],
)  # fmt: skip
def test_node_affinity_requirement(
    requirement: NodeSelectorRequirement, labels: dict[str, str], matches: bool
) -> None:
    assert requirement.matches(labels) is matches


def test_an_empty_affinity_term_matches_no_node_as_in_kubernetes() -> None:
    assert not NodeSelectorTerm(()).matches({"any": "label"})


@pytest.mark.parametrize(
    ("cpu", "memory", "expected"),
    [
        pytest.param("500m", "1.5Gi", Resources(1, 500, 3 * 2**29), id="suffixes"),
        pytest.param(2, 1000, Resources(1, 2000, 1000), id="numbers"),
        pytest.param(Quantity("0.25"), "1k", Resources(1, 250, 1000), id="quantity"),
    ],
)
def test_resources_from_quantities(
    cpu: str | int | Quantity, memory: str | int, expected: Resources
) -> None:
    assert Resources.of(1, cpu, memory) == expected
