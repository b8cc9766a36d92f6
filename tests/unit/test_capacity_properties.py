"""Properties of the capacity planner over generated clusters (hypothesis): never above
maxNodes; never a pod on a capacity type its spot policy forbids; every pending pod that fits
some pool gets capacity, or is reported because that pool is full; planning on the applied plan
is empty; never a node removed that holds a pod that may not be disrupted."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsam.api import constants as c
from sparsam.api.gpunodepool import CapacityType, Taint
from sparsam.decisions.capacity import (
    CapacityRules,
    ClusterState,
    NewNode,
    Node,
    NodeRef,
    Offering,
    Plan,
    Pod,
    Pool,
    Resources,
    apply_plan,
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

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ZONE = "topology.kubernetes.io/zone"
GPU_TYPES = ("NVIDIA-A10G", "NVIDIA-L40S")
#: The test file runs in well under 20 s with this many examples per property.
EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOLERATIONS = (
    (),
    (Toleration(key=c.TAINT_GPU, operator="Exists"),),
    (Toleration(key=c.TAINT_GPU, operator="Exists"), Toleration(key=c.TAINT_SPOT, value="spot")),
    (Toleration(operator="Exists"),),
)
SELECTORS: tuple[dict[str, str], ...] = (
    {},
    {},
    {ZONE: "a"},
    {c.LABEL_GPU_PRODUCT: "NVIDIA-L40S"},
)
AFFINITIES = (
    (),
    (),
    (NodeSelectorTerm((NodeSelectorRequirement(ZONE, "NotIn", ("b",)),)),),
    (
        NodeSelectorTerm((NodeSelectorRequirement(c.LABEL_POOL, "In", ("pool-0",)),)),
        NodeSelectorTerm((NodeSelectorRequirement(ZONE, "In", ("b",)),)),
    ),
)


@st.composite
def pools(draw: st.DrawFn, index: int) -> Pool:
    name = f"pool-{index}"
    capacity: CapacityType = draw(st.sampled_from(["spot", "on-demand"]))
    gpus = draw(st.sampled_from([1, 2, 4, 8]))
    gpu_type = draw(st.sampled_from(GPU_TYPES))
    max_nodes = draw(st.integers(0, 4))
    taints = [Taint(c.TAINT_GPU, "NoSchedule", "present")]
    if capacity == "spot":
        taints.append(Taint(c.TAINT_SPOT, "NoSchedule", "spot"))
    if draw(st.integers(0, 4)) == 0:
        taints.append(Taint("dedicated", "NoSchedule", "ml"))
    return Pool(
        name=name,
        gpu_type=gpu_type,
        node_resources=Resources.of(gpus, 16 * gpus, f"{64 * gpus}Gi"),
        capacity_type=capacity,
        price_per_hour=draw(st.sampled_from([0.5, 1.0, 2.0, 3.5, 8.0])),
        max_nodes=max_nodes,
        min_nodes=draw(st.integers(0, max_nodes)) if draw(st.integers(0, 3)) == 0 else 0,
        scale_down_after=draw(st.sampled_from([0, 5, 10])) * MINUTE,
        labels={
            c.LABEL_POOL: name,
            c.LABEL_CAPACITY_TYPE: capacity,
            c.LABEL_GPU_PRODUCT: gpu_type,
            ZONE: draw(st.sampled_from(["a", "b"])),
        },
        taints=tuple(taints),
    )


@st.composite
def pods(draw: st.DrawFn, name: str) -> Pod:
    gpus = draw(st.sampled_from([0, 1, 1, 2, 4, 8, 16]))
    training = draw(st.integers(0, 3)) == 0
    return Pod(
        name=name,
        namespace=draw(st.sampled_from(["team", "team", "restricted"])),
        requests=Resources.of(
            gpus, draw(st.sampled_from([1, 2, 4, 8])), f"{draw(st.sampled_from([4, 16, 64]))}Gi"
        ),
        node_selector=draw(st.sampled_from(SELECTORS)),
        tolerations=draw(st.sampled_from(TOLERATIONS[1:] if gpus else TOLERATIONS)),
        affinity=draw(st.sampled_from(AFFINITIES)),
        spot=draw(st.sampled_from(["Prefer", "Prefer", "Require", "Never"])),
        priority=draw(st.sampled_from([0, 0, 100])),
        training_worker=training,
        fresh_checkpoint=training and draw(st.booleans()),
        do_not_disrupt=draw(st.integers(0, 5)) == 0,
    )


@st.composite
def nodes_of(draw: st.DrawFn, pool: Pool, serial: list[int]) -> list[Node]:
    nodes = []
    for _ in range(draw(st.integers(0, pool.max_nodes))):
        serial[0] += 1
        name = f"node-{serial[0]}"
        alloc = pool.node_resources
        room = [alloc.gpus, alloc.cpu_millis, alloc.memory_bytes]
        bound = []
        for i in range(draw(st.integers(0, 3))):
            candidate = draw(pods(f"{name}-pod-{i}"))
            need = candidate.requests.as_tuple()
            if all(n <= r for n, r in zip(need, room, strict=True)):
                room = [r - n for n, r in zip(need, room, strict=True)]
                bound.append(candidate)
        age = draw(st.integers(0, 60)) * MINUTE
        empty_for = draw(st.none() | st.integers(0, 60).map(lambda m: m * MINUTE))
        nodes.append(
            Node(
                name=name,
                pool=pool.name,
                allocatable=alloc,
                created=NOW - age,
                labels={**pool.labels, "kubernetes.io/hostname": name},
                taints=pool.taints,
                capacity_type=pool.capacity_type,
                ready=draw(st.integers(0, 4)) > 0,
                cordoned=draw(st.integers(0, 9)) == 0,
                empty_since=None if bound or empty_for is None else NOW - min(empty_for, age),
                pods=tuple(bound),
            )
        )
    return nodes


@st.composite
def states(draw: st.DrawFn) -> ClusterState:
    the_pools = [draw(pools(i)) for i in range(draw(st.integers(1, 4)))]
    serial = [0]
    nodes = [node for pool in the_pools for node in draw(nodes_of(pool, serial))]
    if draw(st.booleans()):
        nodes.append(Node("cpu-node", None, Resources.of(0, 16, "64Gi"), NOW - 99 * MINUTE))
    pending = [draw(pods(f"pending-{i}")) for i in range(draw(st.integers(0, 10)))]
    offerings = {}
    for pool in the_pools:
        minutes = draw(st.sampled_from([None, -3, 0, 2, 4, 6]))
        if minutes is not None:
            until = NOW + minutes * MINUTE if draw(st.booleans()) else None
            offerings[pool.name] = Offering(
                unavailable_until=until, last_failure=NOW - abs(minutes) * MINUTE
            )
    return ClusterState(
        pools=tuple(the_pools),
        nodes=tuple(nodes),
        pending=tuple(pending),
        offerings=offerings,
        rules={"restricted": CapacityRules(allowed_gpu_types=frozenset({"NVIDIA-L40S"}))},
    )


def _capacity_type(state: ClusterState, ref: NodeRef) -> CapacityType:
    if isinstance(ref, NewNode):
        return next(p.capacity_type for p in state.pools if p.name == ref.pool)
    return next(n.capacity_type for n in state.nodes if n.name == ref)


def _may_use(state: ClusterState, pod: Pod, pool: Pool) -> bool:
    """Could a new node of `pool` take `pod` at all (the test's own reading of the rules)?"""
    if pool.max_nodes == 0 or not all(
        n <= h for n, h in zip(pod.requests.as_tuple(), pool.node_resources.as_tuple(), strict=True)
    ):
        return False
    until = state.offerings.get(pool.name, Offering()).unavailable_until
    if until is not None and until > NOW:
        return False
    if (pod.spot, pool.capacity_type) in {("Never", "spot"), ("Require", "on-demand")}:
        return False
    allowed = state.rules_for(pod.namespace).allowed_gpu_types
    if allowed is not None and pool.gpu_type not in allowed:
        return False
    return (
        selector_mismatch(pod.node_selector.items(), pool.labels) is None
        and affinity_matches(pod.affinity, pool.labels)
        and untolerated(pod.tolerations, pool.taints) is None
    )


def _pool_sizes(state: ClusterState, plan: Plan) -> Counter[str]:
    sizes = Counter(n.pool for n in state.nodes if n.pool and n.name not in plan.remove)
    sizes.update(plan.add)
    return Counter({k: v for k, v in sizes.items() if k is not None})


@EXAMPLES
@given(states())
def test_never_above_max_nodes(state: ClusterState) -> None:
    plan = plan_capacity(state, NOW)
    sizes = _pool_sizes(state, plan)
    for pool in state.pools:
        assert sizes[pool.name] <= pool.max_nodes


@EXAMPLES
@given(states())
def test_never_a_pod_on_a_capacity_type_its_policy_forbids(state: ClusterState) -> None:
    plan = plan_capacity(state, NOW)
    every_pod = {p.key: p for p in state.pending} | {p.key: p for n in state.nodes for p in n.pods}
    for key, ref in [*plan.placements.items(), *plan.moves.items()]:
        capacity = _capacity_type(state, ref)
        policy = every_pod[key].spot
        assert (policy, capacity) not in {("Never", "spot"), ("Require", "on-demand")}


@EXAMPLES
@given(states())
def test_every_pending_pod_gets_capacity_or_is_reported(state: ClusterState) -> None:
    plan = plan_capacity(state, NOW)
    sizes = _pool_sizes(state, plan)
    for pod in state.pending:
        assert (pod.key in plan.placements) != (pod.key in plan.unschedulable)
        if pod.key in plan.unschedulable:
            reason = plan.unschedulable[pod.key]
            for pool in state.pools:
                if _may_use(state, pod, pool):
                    assert sizes[pool.name] >= pool.max_nodes, (pool.name, reason)
                    assert f"pool {pool.name} is at maxNodes" in reason
    # The packing never overfills a node (the generated nodes start within their room).
    for node in apply_plan(state, plan, NOW).nodes:
        used = [sum(p.requests.as_tuple()[d] for p in node.pods) for d in range(3)]
        assert all(u <= a for u, a in zip(used, node.allocatable.as_tuple(), strict=True))


@EXAMPLES
@given(states(), st.booleans())
def test_planning_on_the_applied_plan_is_empty(state: ClusterState, bind: bool) -> None:
    # bind=False: the nodes are coming up and the pods still pending (nominated to them).
    plan = plan_capacity(state, NOW)
    after = apply_plan(state, plan, NOW, bind=bind)
    again = plan_capacity(after, NOW)
    assert again.empty, (plan, again)
    assert set(again.unschedulable) == set(plan.unschedulable)


@EXAMPLES
@given(states())
def test_never_removes_a_node_with_a_pod_that_may_not_be_disrupted(state: ClusterState) -> None:
    plan = plan_capacity(state, NOW)
    removed = set(plan.remove)
    for node in state.nodes:
        if node.name in removed:
            assert node.pool is not None
            assert all(pod.movable for pod in node.pods)
            assert not any(pod.do_not_disrupt for pod in node.pods)
