"""Spreading new spot nodes across spot pools (`PlannerSettings.spot_pool_max_share`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from sparsam.decisions.capacity import (
    ClusterState,
    Node,
    PlannerSettings,
    Pod,
    Resources,
    apply_plan,
    plan_capacity,
    refused_offering,
)
from sparsam.decisions.rightsizing import pick_spread_pool
from sparsam.simulate.policies import TOLERATIONS, make_pool

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def worker(name: str) -> Pod:
    return Pod(
        name=name,
        namespace="team",
        requests=Resources(8, 8 * 12_000, 8 * 144 * 2**30),
        tolerations=TOLERATIONS,
        spot="Prefer",
    )


def state(share: float, *, cheap_a: bool = False, pending: int = 6) -> ClusterState:
    pools = (
        make_pool("spot-a", "spot", 8, 0.3 if cheap_a else 0.33, max_nodes=20),
        make_pool("spot-b", "spot", 8, 0.33, max_nodes=20),
        make_pool("spot-c", "spot", 8, 0.33, max_nodes=20),
        make_pool("on-demand", "on-demand", 8, 1.0, max_nodes=20),
    )
    return ClusterState(
        pools=pools,
        pending=tuple(worker(f"w{i}") for i in range(pending)),
        settings=PlannerSettings(spot_pool_max_share=share),
    )


def test_without_a_share_the_cheapest_spot_pool_takes_every_node() -> None:
    assert plan_capacity(state(1.0), NOW).add == {"spot-a": 6}


def test_a_share_spreads_new_nodes_so_no_pool_holds_more_than_it() -> None:
    plan = plan_capacity(state(0.4), NOW)
    assert plan.add == {"spot-a": 2, "spot-b": 2, "spot-c": 2}


def test_the_share_counts_the_nodes_already_there_and_the_plan_is_a_fixed_point() -> None:
    first = state(0.5, pending=3)
    after = apply_plan(first, plan_capacity(first, NOW), NOW)
    more = ClusterState(
        pools=after.pools,
        nodes=after.nodes,
        pending=tuple(worker(f"x{i}") for i in range(3)),
        settings=after.settings,
    )
    plan = plan_capacity(more, NOW)
    final = apply_plan(more, plan, NOW)
    by_pool = Counter(n.pool for n in final.nodes)
    assert sum(by_pool.values()) == 6
    assert max(by_pool.values()) <= 3  # half of 6
    assert plan_capacity(final, NOW).empty


def test_within_the_share_the_cheaper_pool_comes_first() -> None:
    plan = plan_capacity(state(0.5, cheap_a=True, pending=4), NOW)
    assert plan.add["spot-a"] == 2  # the cheaper pool, up to half
    assert sum(plan.add.values()) == 4
    assert "on-demand" not in plan.add


def test_a_refusing_pool_is_left_out_of_the_spread() -> None:
    refused = state(0.4)
    refused = ClusterState(
        pools=refused.pools,
        pending=refused.pending,
        settings=refused.settings,
        offerings={"spot-b": refused_offering(NOW)},
    )
    plan = plan_capacity(refused, NOW)
    assert plan.add == {"spot-a": 3, "spot-c": 3}


@pytest.mark.parametrize(
    ("count", "share", "chosen"),
    [
        pytest.param({}, 0.5, "spot-b", id="none-within-share-the-fewest-cheapest-first"),
        pytest.param({"spot-a": 1, "spot-b": 1}, 0.7, "spot-b", id="first-within-share"),
        pytest.param({"spot-a": 1, "spot-b": 2}, 0.5, "spot-a", id="over-share-goes-elsewhere"),
        pytest.param({"spot-a": 1, "spot-b": 1}, 0.5, "spot-b", id="none-within-ties-in-order"),
    ],
)
def test_pick_spread_pool(count: dict[str, int], share: float, chosen: str) -> None:
    # Listed cheapest first: spot-b, then spot-a.
    b = make_pool("spot-b", "spot", 8, 0.3, max_nodes=20)
    a = make_pool("spot-a", "spot", 8, 0.3, max_nodes=20)
    total = sum(count.values()) + 1
    assert pick_spread_pool([b, a], count, share, total).name == chosen


def with_idle_on_demand_node(first: bool) -> ClusterState:
    base = state(1.0, pending=1)
    on_demand = next(p for p in base.pools if p.name == "on-demand")
    idle = Node(
        name="od-0",
        pool="on-demand",
        allocatable=on_demand.node_resources,
        created=NOW,
        labels=dict(on_demand.labels),
        taints=on_demand.taints,
        capacity_type="on-demand",
        ready=True,
        empty_since=NOW,
    )
    return ClusterState(
        pools=base.pools,
        nodes=(idle,),
        pending=base.pending,
        settings=PlannerSettings(new_spot_before_on_demand_room=first),
    )


def test_by_default_a_prefer_spot_pod_takes_free_on_demand_room() -> None:
    plan = plan_capacity(with_idle_on_demand_node(False), NOW)
    assert plan.add == {}
    assert plan.placements == {("team", "w0"): "od-0"}


def test_new_spot_before_on_demand_room_gives_the_pod_a_spot_node() -> None:
    plan = plan_capacity(with_idle_on_demand_node(True), NOW)
    assert plan.add == {"spot-a": 1}


def test_new_spot_before_on_demand_room_still_uses_the_room_when_spot_refuses() -> None:
    refused = with_idle_on_demand_node(True)
    offerings = {p.name: refused_offering(NOW) for p in refused.pools if p.capacity_type == "spot"}
    plan = plan_capacity(replace(refused, offerings=offerings), NOW)
    assert plan.add == {}
    assert plan.placements == {("team", "w0"): "od-0"}
