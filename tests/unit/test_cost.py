"""Cost (decisions/cost): accrual, savings, budgets, status write throttling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsam.api.common import Cost
from sparsam.decisions.cost import (
    Accrual,
    PriceTable,
    WorkerInterval,
    accrue,
    budget_action,
    price_per_gpu_hour,
    should_write_cost_status,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
PRICES = PriceTable(
    {
        ("A100", "spot"): 1.2,
        ("A100", "on-demand"): 4.0,
        ("*", "on-demand"): 3.0,
    }
)


def worker(
    capacity: str,
    hours: float = 1.0,
    gpus: int = 1,
    gpu_type: str | None = "A100",
    pool_price: float | None = None,
    start: datetime = T0,
) -> WorkerInterval:
    return WorkerInterval(start, start + hours * H, gpus, capacity, gpu_type, pool_price)


@pytest.mark.parametrize(
    ("intervals", "gpu_seconds", "cost", "on_demand", "savings"),
    [
        pytest.param([worker("spot")], 3600.0, 1.2, 4.0, 0.7, id="spot-table"),
        pytest.param([worker("on-demand", 0.5, gpus=2)], 3600.0, 4.0, 4.0, 0.0, id="od-table"),
        # pricePerHour 8 / gpusPerNode 8 = 1.0 per GPU-hour beats the table's 1.2.
        pytest.param([worker("spot", pool_price=1.0)], 3600.0, 1.0, 4.0, 0.75, id="spot-pool"),
        pytest.param(
            [worker("spot"), worker("on-demand")], 7200.0, 5.2, 8.0, 0.35, id="spot-and-od"
        ),
        # No entry for T4: the table's "*" on-demand price.
        pytest.param([worker("on-demand", gpu_type="T4")], 3600.0, 3.0, 3.0, 0.0, id="any-gpu"),
        # An on-demand worker's own (pool) price is its on-demand equivalent.
        pytest.param(
            [worker("on-demand", gpu_type=None, pool_price=2.5)],
            3600.0,
            2.5,
            2.5,
            0.0,
            id="od-pool-only",
        ),
        pytest.param([], 0.0, 0.0, 0.0, None, id="nothing"),
        # Ends before the mark / starts at up_to: nothing.
        pytest.param([worker("spot", start=T0 - 2 * H)], 0.0, 0.0, 0.0, None, id="before"),
    ],
)
def test_accrue(
    intervals: list[WorkerInterval],
    gpu_seconds: float,
    cost: float,
    on_demand: float,
    savings: float | None,
) -> None:
    result = accrue(Accrual(accrued_up_to=T0), intervals, T0 + 2 * H, PRICES)
    assert result.accrued_up_to == T0 + 2 * H
    assert result.gpu_seconds == pytest.approx(gpu_seconds)
    assert result.cost == pytest.approx(cost)
    assert result.on_demand_equivalent == pytest.approx(on_demand)
    assert result.savings_ratio == (None if savings is None else pytest.approx(savings))


def test_cost_by_capacity_type() -> None:
    result = accrue(Accrual(), [worker("spot"), worker("on-demand")], T0 + H, PRICES)
    assert dict(result.cost_by_capacity_type) == pytest.approx({"spot": 1.2, "on-demand": 4.0})


def test_unpriced_is_counted_not_costed() -> None:
    result = accrue(Accrual(), [worker("spot", gpu_type="T4")], T0 + H, PRICES)
    assert result.gpu_seconds == 3600.0
    assert result.unpriced_gpu_seconds == 3600.0
    assert result.cost == 0.0
    assert result.savings_ratio is None


def test_unknown_on_demand_price_makes_savings_unknown() -> None:
    prices = PriceTable({("A100", "spot"): 1.2})
    result = accrue(Accrual(), [worker("spot")], T0 + H, prices)
    assert result.cost == pytest.approx(1.2)
    assert result.on_demand_equivalent is None
    assert result.savings_ratio is None
    assert result.to_cost().on_demand_equivalent is None


def test_running_worker_is_accrued_up_to_now() -> None:
    running = WorkerInterval(T0, None, 2, "spot", "A100")
    result = accrue(Accrual(), [running], T0 + 30 * timedelta(minutes=1), PRICES)
    assert result.gpu_seconds == pytest.approx(3600.0)
    assert result.cost == pytest.approx(1.2)


@pytest.mark.parametrize(
    "up_to",
    [pytest.param(T0 + H, id="same-mark"), pytest.param(T0 + H / 2, id="earlier-than-mark")],
)
def test_accrue_is_idempotent_over_the_mark(up_to: datetime) -> None:
    intervals = [worker("spot", 3.0), worker("on-demand", 3.0)]
    once = accrue(Accrual(), intervals, T0 + H, PRICES)
    # A restarted controller reads the mark back from status and accrues again.
    assert accrue(once, intervals, up_to, PRICES) == once


def test_accrue_in_steps_equals_at_once() -> None:
    intervals = [worker("spot", 3.0), worker("on-demand", 1.5, gpus=4)]
    steps = Accrual(accrued_up_to=T0)
    for minutes in range(7, 200, 7):
        steps = accrue(steps, intervals, T0 + timedelta(minutes=minutes), PRICES)
    steps = accrue(steps, intervals, T0 + 4 * H, PRICES)
    once = accrue(Accrual(accrued_up_to=T0), intervals, T0 + 4 * H, PRICES)
    assert steps.gpu_seconds == pytest.approx(once.gpu_seconds)
    assert steps.cost == pytest.approx(once.cost)
    assert steps.on_demand_equivalent == pytest.approx(once.on_demand_equivalent)


def test_to_cost_rounds() -> None:
    result = accrue(Accrual(), [worker("spot", hours=1 / 3)], T0 + H, PRICES)
    assert result.to_cost() == Cost(
        accrued=0.4, on_demand_equivalent=1.3333, savings_ratio=0.7, gpu_seconds=1200.0
    )


@pytest.mark.parametrize(
    ("price", "gpus", "per_gpu"),
    [
        pytest.param(8.0, 8, 1.0, id="pool"),
        pytest.param(None, 8, None, id="no-price"),
        pytest.param(8.0, 0, None, id="no-gpus"),
    ],
)
def test_price_per_gpu_hour(price: float | None, gpus: int, per_gpu: float | None) -> None:
    assert price_per_gpu_hour(price, gpus) == per_gpu


@pytest.mark.parametrize(
    ("spent", "already", "crossed", "due"),
    [
        pytest.param(50.0, set(), (), False, id="below"),
        pytest.param(85.0, set(), (0.8,), False, id="alert-80"),
        pytest.param(85.0, {0.8}, (), False, id="alert-80-once"),
        pytest.param(100.0, {0.8}, (1.0,), True, id="exactly-100"),
        pytest.param(120.0, set(), (0.8, 1.0), True, id="jump-past-both"),
        pytest.param(120.0, {0.8, 1.0}, (), True, id="still-over"),
    ],
)
def test_budget_action(
    spent: float, already: set[float], crossed: tuple[float, ...], due: bool
) -> None:
    decision = budget_action(spent, 100.0, (1.0, 0.8), "Suspend", frozenset(already))
    assert decision.newly_crossed == crossed
    assert decision.action_due is due
    assert decision.action == "Suspend"
    assert decision.alerted == frozenset(already) | frozenset(crossed)
    assert decision.fraction == pytest.approx(spent / 100.0)


@pytest.mark.parametrize("action", ["Alert", "BlockNew", "Suspend", "Fail"])
def test_budget_thresholds_crossed_once_each(action: str) -> None:
    alerted: frozenset[float] = frozenset()
    events: list[float] = []
    due = []
    for spent in (10.0, 50.0, 55.0, 79.0, 90.0, 95.0, 99.9, 100.0, 130.0, 140.0):
        decision = budget_action(spent, 100.0, (0.5, 0.9, 1.0), action, alerted)
        events.extend(decision.newly_crossed)
        alerted = decision.alerted
        due.append(decision.action_due)
    assert events == [0.5, 0.9, 1.0]
    assert due == [False] * 7 + [True] * 3


@pytest.mark.parametrize(
    ("spent", "due"), [pytest.param(0.0, False, id="zero"), pytest.param(0.01, True, id="any")]
)
def test_zero_budget(spent: float, due: bool) -> None:
    assert budget_action(spent, 0.0, (0.8,), "Alert").action_due is due


OLD = Cost(accrued=1.0, on_demand_equivalent=3.0, savings_ratio=0.6667, gpu_seconds=3000.0)
NEW = Cost(accrued=1.1, on_demand_equivalent=3.3, savings_ratio=0.6667, gpu_seconds=3300.0)


@pytest.mark.parametrize(
    ("last", "now", "old", "new", "write"),
    [
        pytest.param(None, T0, None, NEW, True, id="first"),
        pytest.param(T0, T0 + H, OLD, OLD, False, id="unchanged"),
        pytest.param(T0, T0 + timedelta(seconds=10), OLD, NEW, False, id="too-soon"),
        pytest.param(T0, T0 + timedelta(seconds=30), OLD, NEW, True, id="after-30s"),
        pytest.param(None, T0, OLD, NEW, True, id="never-written-by-us"),
    ],
)
def test_should_write_cost_status(
    last: datetime | None, now: datetime, old: Cost | None, new: Cost, write: bool
) -> None:
    assert should_write_cost_status(last, now, old, new) is write


def test_should_write_custom_interval() -> None:
    soon = T0 + timedelta(seconds=10)
    assert should_write_cost_status(T0, soon, OLD, NEW, min_interval=timedelta(seconds=5))


_intervals = st.lists(
    st.builds(
        WorkerInterval,
        start=st.integers(0, 1000).map(lambda m: T0 + timedelta(minutes=m)),
        end=st.one_of(st.none(), st.integers(0, 1000).map(lambda m: T0 + timedelta(minutes=m))),
        gpus=st.integers(0, 8),
        capacity_type=st.sampled_from(["spot", "on-demand"]),
        gpu_type=st.sampled_from(["A100", "T4", None]),
        pool_price_per_gpu_hour=st.one_of(st.none(), st.floats(0.1, 10.0)),
    ),
    max_size=6,
)


@given(intervals=_intervals, cuts=st.lists(st.integers(0, 1200), min_size=3, max_size=3))
def test_accrual_is_additive(intervals: list[WorkerInterval], cuts: list[int]) -> None:
    a, b, c = (T0 + timedelta(minutes=m) for m in sorted(cuts))
    start = Accrual(accrued_up_to=a)
    split = accrue(accrue(start, intervals, b, PRICES), intervals, c, PRICES)
    whole = accrue(start, intervals, c, PRICES)
    assert split.gpu_seconds == pytest.approx(whole.gpu_seconds)
    assert split.cost == pytest.approx(whole.cost)
    assert split.unpriced_gpu_seconds == pytest.approx(whole.unpriced_gpu_seconds)
    if whole.on_demand_equivalent is None:
        assert split.on_demand_equivalent is None
    else:
        assert split.on_demand_equivalent == pytest.approx(whole.on_demand_equivalent)
