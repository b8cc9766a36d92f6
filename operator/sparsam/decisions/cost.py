"""Cost: GPU-seconds and dollars accrued per worker, savings, budgets.

Pure: the handler hands in the workers' intervals, prices and the last "accrued up to" mark
it checkpointed in status; nothing here reads a clock or an API.

- **Price per GPU-hour** of a worker: its node's GPUNodePool `pricePerHour / gpusPerNode`,
  else the configured default table (`PriceTable`, by GPU type and capacity type; prices are
  configuration, never constants in code). Without either, the GPU-seconds are counted as
  `unpriced_gpu_seconds` and cost nothing: missing data is reported, not guessed.
- **On-demand equivalent**: the same GPU-seconds at the on-demand price of that GPU type: an
  on-demand worker's own price, a spot worker's from the table (GPU type, on-demand); None once
  any slice has no known on-demand price.
- **savingsRatio** = 1 - accrued / onDemandEquivalent; None when nothing accrued.
- **Additive and idempotent**: intervals are [start, end) (end None: still running); `accrue`
  counts only the part of each interval in [accrued_up_to, up_to) and moves the mark to
  `up_to`, so accruing again up to the same time adds nothing (a restarted controller does not
  double-count) and accruing [a, b) then [b, c) equals accruing [a, c).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from sparsam.api import constants as c
from sparsam.api.common import Cost

#: Any GPU type: a table key that applies when the exact type has no entry.
ANY_GPU: Final = "*"
#: Decimal places of dollars written to status (sub-cent noise does not cause a write).
STATUS_DIGITS: Final = 4
#: status.cost is written at most this often.
MIN_STATUS_INTERVAL: Final = timedelta(seconds=30)
#: CostPolicy condition types: a threshold of spec.budget.alertAt crossed; the budget spent.
BUDGET_ALERT: Final = "BudgetAlert"
BUDGET_EXCEEDED: Final = "BudgetExceeded"


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Default prices per GPU-hour by (GPU type, capacity type); GPU type `*` matches any."""

    per_gpu_hour: Mapping[tuple[str, str], float] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def price(self, gpu_type: str | None, capacity_type: str) -> float | None:
        if gpu_type is not None and (gpu_type, capacity_type) in self.per_gpu_hour:
            return self.per_gpu_hour[(gpu_type, capacity_type)]
        return self.per_gpu_hour.get((ANY_GPU, capacity_type))


@dataclass(frozen=True, slots=True)
class WorkerInterval:
    """A worker holding `gpus` GPUs on one node over [start, end); end None: still running.
    `pool_price_per_gpu_hour`: the node's GPUNodePool pricePerHour / gpusPerNode, or None."""

    start: datetime
    end: datetime | None
    gpus: int
    capacity_type: str
    gpu_type: str | None = None
    pool_price_per_gpu_hour: float | None = None


@dataclass(frozen=True, slots=True)
class Accrual:
    """Running totals up to `accrued_up_to` (None: nothing accrued yet)."""

    accrued_up_to: datetime | None = None
    gpu_seconds: float = 0.0
    cost: float = 0.0
    #: None once a slice had no known on-demand price.
    on_demand_equivalent: float | None = 0.0
    unpriced_gpu_seconds: float = 0.0
    cost_by_capacity_type: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def savings_ratio(self) -> float | None:
        """1 - accrued / onDemandEquivalent; None when nothing accrued or it is unknown."""
        if not self.on_demand_equivalent or self.on_demand_equivalent <= 0:
            return None
        return 1.0 - self.cost / self.on_demand_equivalent

    def to_cost(self) -> Cost:
        """status.cost, dollars rounded to STATUS_DIGITS places."""
        ratio = self.savings_ratio
        return Cost(
            accrued=round(self.cost, STATUS_DIGITS),
            on_demand_equivalent=(
                None
                if self.on_demand_equivalent is None
                else round(self.on_demand_equivalent, STATUS_DIGITS)
            ),
            savings_ratio=None if ratio is None else round(ratio, STATUS_DIGITS),
            gpu_seconds=round(self.gpu_seconds, 3),
        )


def price_per_gpu_hour(
    pool_price_per_hour: float | None, gpus_per_node: int | None
) -> float | None:
    """A GPUNodePool's price per GPU-hour: pricePerHour / gpusPerNode (None without both)."""
    if pool_price_per_hour is None or not gpus_per_node or gpus_per_node <= 0:
        return None
    return pool_price_per_hour / gpus_per_node


def accrue(
    previous: Accrual, intervals: Iterable[WorkerInterval], up_to: datetime, prices: PriceTable
) -> Accrual:
    """`previous` plus what `intervals` used in [previous.accrued_up_to, up_to)."""
    since = previous.accrued_up_to
    if since is not None and up_to <= since:
        return previous
    gpu_s, cost, unpriced = previous.gpu_seconds, previous.cost, previous.unpriced_gpu_seconds
    on_demand = previous.on_demand_equivalent
    by_type = dict(previous.cost_by_capacity_type)
    for iv in intervals:
        start = iv.start if since is None else max(iv.start, since)
        end = up_to if iv.end is None else min(iv.end, up_to)
        if end <= start or iv.gpus <= 0:
            continue
        slice_gpu_s = (end - start).total_seconds() * iv.gpus
        gpu_s += slice_gpu_s
        price = iv.pool_price_per_gpu_hour
        if price is None:
            price = prices.price(iv.gpu_type, iv.capacity_type)
        if price is None:
            unpriced += slice_gpu_s
            continue
        slice_cost = slice_gpu_s / 3600.0 * price
        cost += slice_cost
        by_type[iv.capacity_type] = by_type.get(iv.capacity_type, 0.0) + slice_cost
        if iv.capacity_type == c.CAPACITY_ON_DEMAND:
            od_price: float | None = price
        else:
            od_price = prices.price(iv.gpu_type, c.CAPACITY_ON_DEMAND)
        if on_demand is not None:
            on_demand = None if od_price is None else on_demand + slice_gpu_s / 3600.0 * od_price
    return Accrual(
        accrued_up_to=up_to,
        gpu_seconds=gpu_s,
        cost=cost,
        on_demand_equivalent=on_demand,
        unpriced_gpu_seconds=unpriced,
        cost_by_capacity_type=MappingProxyType(by_type),
    )


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """What a budget asks for now.

    `newly_crossed`: alertAt fractions crossed and not alerted before (one Event each);
    `alerted`: the fractions to remember as alerted from now on; `action_due`: spent has
    reached the limit (100 %), so `action` (Alert, BlockNew, Suspend or Fail) is in effect, for
    as long as it stays there.
    """

    fraction: float
    newly_crossed: tuple[float, ...]
    alerted: frozenset[float]
    action_due: bool
    action: str


def budget_action(
    spent: float,
    limit: float,
    alert_at: Iterable[float],
    on_exceeded: str,
    already_alerted: Set[float] = frozenset(),
) -> BudgetDecision:
    """Thresholds newly crossed and whether the on-exceeded action is due (spent >= limit)."""
    # A zero budget is exceeded by any spending at all.
    fraction = spent / limit if limit > 0 else (float("inf") if spent > 0 else 0.0)
    crossed = tuple(t for t in sorted(set(alert_at)) if fraction >= t and t not in already_alerted)
    return BudgetDecision(
        fraction=fraction,
        newly_crossed=crossed,
        alerted=frozenset(already_alerted) | frozenset(crossed),
        action_due=fraction >= 1.0,
        action=on_exceeded,
    )


def should_write_cost_status(
    last_written_at: datetime | None,
    now: datetime,
    old: Cost | None,
    new: Cost,
    min_interval: timedelta = MIN_STATUS_INTERVAL,
) -> bool:
    """Only when it changed, and at most once every `min_interval`."""
    if old == new:
        return False
    return last_written_at is None or now - last_written_at >= min_interval


def month(now: datetime) -> tuple[datetime, datetime]:
    """The budget period containing `now`: its calendar month in UTC, [start, end)."""
    utc = now.astimezone(UTC)
    start = utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def cost_status_to_write(
    accrual: Accrual | None,
    recorded: Cost | None,
    last_written_at: datetime | None,
    now: datetime,
    force: bool = False,
) -> dict[str, Any] | None:
    """status.cost to write now, or None: at most every 30 s and only when it changed, or
    whenever `force` (a change of phase: a stopped object shows what it cost)."""
    if accrual is None:
        return None
    cost = accrual.to_cost()
    due = should_write_cost_status(last_written_at, now, recorded, cost)
    if not due and not (force and recorded != cost):
        return None
    return raw_cost(cost)


def raw_cost(cost: Cost) -> dict[str, Any]:
    """status.cost as the CRD has it (fields with no value left out)."""
    raw = {
        "accrued": cost.accrued,
        "onDemandEquivalent": cost.on_demand_equivalent,
        "savingsRatio": cost.savings_ratio,
        "gpuSeconds": cost.gpu_seconds,
    }
    return {k: v for k, v in raw.items() if v is not None}
