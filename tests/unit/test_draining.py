"""`choose_drains`: which of a pool's nodes a pass drains, and which it uncordons."""

from __future__ import annotations

from sparsam.decisions.capacity import Plan
from sparsam.decisions.draining import (
    REASON_INTERRUPTION,
    REASON_SCALE_DOWN,
    Drain,
    DrainChoice,
    PoolNode,
    choose_drains,
)


def test_an_interrupted_node_drains_whatever_the_plan_says() -> None:
    choice = choose_drains([PoolNode("a", interruption="spot notice")], Plan())
    assert choice == DrainChoice((Drain("a", REASON_INTERRUPTION, "interrupted (spot notice)"),))


def test_a_node_the_plan_removes_drains_to_scale_down_with_the_plans_reason() -> None:
    plan = Plan(remove=("b", "c"), remove_reasons={"b": "empty for 10m"})
    choice = choose_drains([PoolNode("c"), PoolNode("b"), PoolNode("keep")], plan)
    assert choice.drain == (
        Drain("b", REASON_SCALE_DOWN, "empty for 10m"),
        Drain("c", REASON_SCALE_DOWN, "not needed"),
    )
    assert choice.uncordon == ()


def test_a_node_we_cordoned_that_the_plan_keeps_is_uncordoned() -> None:
    nodes = [PoolNode("kept", cordoned=True), PoolNode("gone", cordoned=True)]
    choice = choose_drains(nodes, Plan(remove=("gone",)))
    assert choice.uncordon == ("kept",)
    assert [d.node for d in choice.drain] == ["gone"]


def test_an_interruption_wins_over_the_plans_reason() -> None:
    plan = Plan(remove=("a",), remove_reasons={"a": "not needed"})
    (drain,) = choose_drains([PoolNode("a", interruption="rebalance", cordoned=True)], plan).drain
    assert drain.why == REASON_INTERRUPTION
