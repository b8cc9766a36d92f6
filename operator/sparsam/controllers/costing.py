"""What an object's running pods cost: GPU time priced by their nodes' pools, kept per object.

Shared by the TrainingJob and InferenceService passes, so both accrue, export and report cost
the same way (`decisions.cost` does the arithmetic; this keeps the running totals between
passes and turns them into metrics and status).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sparsam import metrics
from sparsam.api import constants as c
from sparsam.api.common import Cost, ObjectMeta
from sparsam.api.conditions import parse_rfc3339
from sparsam.decisions.cost import (
    Accrual,
    PriceTable,
    WorkerInterval,
    accrue,
    price_per_gpu_hour,
    raw_cost,
    should_write_cost_status,
)
from sparsam.kube.observe import Body


class CostMeter:
    """Running cost per object uid, for one kind. Not thread-safe: the pass that owns the
    object calls it under its own lock."""

    def __init__(self, kind: str, prices: PriceTable | None = None) -> None:
        self._kind = kind
        self._prices = prices or PriceTable()
        self._accruals: dict[str, Accrual] = {}
        self._written: dict[str, datetime] = {}

    def accrue(
        self,
        meta: ObjectMeta,
        recorded: Cost | None,
        pods: Sequence[Body],
        gpus: int,
        nodes: Mapping[str, Body],
        pools: Mapping[str, Body],
        now: datetime,
    ) -> Accrual:
        """Cost up to `now` of `pods` running now (each holding `gpus` GPUs), from the
        previous pass's mark. After a restart the totals start from the object's recorded
        status.cost and the mark from now (the time the operator was down is not charged)."""
        previous = self._accruals.get(meta.uid)
        if previous is None:
            cost = recorded or Cost()
            previous = Accrual(
                accrued_up_to=now,
                gpu_seconds=cost.gpu_seconds or 0.0,
                cost=cost.accrued or 0.0,
                on_demand_equivalent=cost.on_demand_equivalent or 0.0,
            )
        found = (_interval(pod, nodes, pools, gpus, previous, now) for pod in pods)
        accrual = accrue(previous, [iv for iv in found if iv is not None], now, self._prices)
        self._export(meta, previous, accrual)
        self._accruals[meta.uid] = accrual
        return accrual

    def status(
        self, uid: str, recorded: Cost | None, accrual: Accrual, now: datetime, force: bool = False
    ) -> dict[str, Any] | None:
        """status.cost to write now, or None: at most every 30 s and only when it changed, or
        whenever `force` (a change of phase: a stopped object shows what it cost)."""
        cost = accrual.to_cost()
        due = should_write_cost_status(self._written.get(uid), now, recorded, cost)
        if not due and not (force and recorded != cost):
            return None
        self._written[uid] = now
        return raw_cost(cost)

    def written(self, uid: str) -> datetime | None:
        """When status.cost of `uid` was last written (None: not since the operator started)."""
        return self._written.get(uid)

    def wrote(self, uid: str, now: datetime) -> None:
        """A pass wrote status.cost of `uid` at `now` (its own plan decided it was due)."""
        self._written[uid] = now

    def forget(self, uid: str) -> None:
        self._accruals.pop(uid, None)
        self._written.pop(uid, None)

    def _export(self, meta: ObjectMeta, before: Accrual, after: Accrual) -> None:
        ns, name, kind = meta.namespace, meta.name, self._kind
        for capacity, dollars in after.cost_by_capacity_type.items():
            delta = dollars - before.cost_by_capacity_type.get(capacity, 0.0)
            if delta > 0:
                metrics.COST.labels(ns, kind, name, capacity).inc(delta)
        gpu_delta = after.gpu_seconds - before.gpu_seconds
        if gpu_delta > 0:
            metrics.GPU_SECONDS.labels(ns, kind, name).inc(gpu_delta)
        if before.on_demand_equivalent is not None and after.on_demand_equivalent is not None:
            od_delta = after.on_demand_equivalent - before.on_demand_equivalent
            if od_delta > 0:
                metrics.ON_DEMAND_EQUIVALENT.labels(ns, kind, name).inc(od_delta)


def _interval(
    pod: Body,
    nodes: Mapping[str, Body],
    pools: Mapping[str, Body],
    gpus: int,
    previous: Accrual,
    now: datetime,
) -> WorkerInterval | None:
    """A running pod's GPU time, priced by its node's pool. Without a startTime it has run
    since the last mark at least (it was running when the pass before looked)."""
    status = pod.get("status") or {}
    node_name = (pod.get("spec") or {}).get("nodeName")
    if status.get("phase") != "Running" or not node_name:
        return None
    node = nodes.get(node_name) or {}
    labels: Mapping[str, str] = (node.get("metadata") or {}).get("labels") or {}
    pool = pools.get(labels.get(c.LABEL_POOL, "")) or {}
    pool_spec = pool.get("spec") or {}
    return WorkerInterval(
        start=parse_rfc3339(status.get("startTime")) or previous.accrued_up_to or now,
        end=None,
        gpus=gpus,
        capacity_type=labels.get(c.LABEL_CAPACITY_TYPE, c.CAPACITY_ON_DEMAND),
        gpu_type=labels.get(c.LABEL_GPU_PRODUCT),
        pool_price_per_gpu_hour=price_per_gpu_hour(
            pool_spec.get("pricePerHour"),
            (pool_spec.get("nodeTemplate") or {}).get("gpusPerNode"),
        ),
    )
