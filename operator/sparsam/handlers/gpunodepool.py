"""Kopf handlers of the GPUNodePool controller: caches in, one pass per pool, status out.

Thin on purpose: Kopf indexes are the watch caches (Kopf starts no handler before every index
has listed its objects, which is the "decide only after the caches have synced" rule), a timer
per pool runs `controllers.capacity.CapacityController.reconcile_pool` in a thread, and the
result is written to status (only the fields that changed) and posted as Events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from sparsam.api import constants as c
from sparsam.api.conditions import READY, set_condition
from sparsam.api.costpolicy import CostPolicy
from sparsam.api.gpunodepool import GPUNodePool, GPUNodePoolStatus
from sparsam.api.parse import InvalidSpec, from_raw
from sparsam.controllers.capacity import CapacityController, Snapshot
from sparsam.decisions.cluster import Pod
from sparsam.kube.observe import holds_room, is_pending, pod_from_body
from sparsam.providers.nodepool import Transient

#: Index keys of the pods index: bound pods under their node's name, pending ones under this.
PENDING = ("pending",)


def _node_view(body: kopf.Body) -> dict[str, Any]:
    """The parts of a Node the controller reads; the index keeps only these."""
    metadata = body.get("metadata") or {}
    return {
        "metadata": {
            key: metadata.get(key)
            for key in ("name", "uid", "labels", "annotations", "creationTimestamp")
        },
        "spec": {key: body.get("spec", {}).get(key) for key in ("taints", "unschedulable")},
        "status": {
            "allocatable": body.get("status", {}).get("allocatable"),
            "conditions": body.get("status", {}).get("conditions"),
        },
    }


def register(
    registry: kopf.OperatorRegistry,
    interval: float,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Register the indexes and the per-pool timer in `registry`; the controller comes in
    through Kopf's memo (`memo.capacity`)."""

    @kopf.index("", "v1", "nodes", id="node_index", registry=registry)
    def node_index(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
        return {name: _node_view(body)}

    @kopf.index("", "v1", "pods", id="pod_index", registry=registry)
    def pod_index(body: kopf.Body, spec: kopf.Spec, **_: Any) -> dict[Any, Pod] | None:
        node = spec.get("nodeName")
        if node:
            return {node: pod_from_body(body)} if holds_room(body) else None
        return {PENDING: pod_from_body(body)} if is_pending(body) else None

    @kopf.index(c.GROUP, c.VERSION, c.GPU_NODE_POOL.plural, id="pool_index", registry=registry)
    def pool_index(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
        return {name: dict(body)}

    @kopf.index(c.GROUP, c.VERSION, c.COST_POLICY.plural, id="policy_index", registry=registry)
    def policy_index(body: kopf.Body, **_: Any) -> dict[str, CostPolicy] | None:
        try:
            policy = CostPolicy.from_body(body)
        except InvalidSpec:
            return None  # the CostPolicy controller reports it; it governs nothing meanwhile
        return {policy.metadata.name: policy}

    @kopf.index("", "v1", "namespaces", id="namespace_index", registry=registry)
    def namespace_index(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
        return {name: dict(labels)}

    @kopf.timer(
        c.GROUP,
        c.VERSION,
        c.GPU_NODE_POOL.plural,
        interval=interval,
        id="reconcile",
        registry=registry,
    )
    async def reconcile(
        name: str,
        body: kopf.Body,
        patch: kopf.Patch,
        memo: Any,
        **kwargs: Any,
    ) -> None:
        moment = now()
        try:
            GPUNodePool.from_body(body)
        except InvalidSpec as exc:
            _write_status(body, patch, {"conditions": _invalid(body, str(exc), moment)})
            return
        snap = _snapshot(kwargs)
        if name not in snap.pools:
            return  # not in the index yet; the next tick has it
        controller: CapacityController = memo.capacity
        try:
            result = await asyncio.to_thread(controller.reconcile_pool, name, snap, moment)
        except Transient as exc:
            raise kopf.TemporaryError(str(exc), delay=interval) from exc
        _write_status(body, patch, result.status)
        for event in result.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)

    @kopf.on.delete(c.GROUP, c.VERSION, c.GPU_NODE_POOL.plural, id="retire", registry=registry)
    async def retire(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
        """A deleted pool takes its nodes with it; its finalizer stays until they are gone."""
        try:
            pool = GPUNodePool.from_body(body)
        except InvalidSpec:
            return  # it never had nodes of ours: we never acted on an invalid pool
        controller: CapacityController = memo.capacity
        try:
            left, events = await asyncio.to_thread(
                controller.retire_pool, pool, _snapshot(kwargs), now()
            )
        except Transient as exc:
            raise kopf.TemporaryError(str(exc), delay=interval) from exc
        for event in events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        if left:
            raise kopf.TemporaryError(f"draining {left} node(s) of the pool", delay=interval)


def _snapshot(indexes: Mapping[str, Any]) -> Snapshot:
    """The caches as typed values; Kopf passes each index as a keyword named by its id."""
    node_index: kopf.Index[str, dict[str, Any]] = indexes["node_index"]
    pod_index: kopf.Index[Any, Pod] = indexes["pod_index"]
    policy_index: kopf.Index[str, CostPolicy] = indexes["policy_index"]
    namespace_index: kopf.Index[str, dict[str, str]] = indexes["namespace_index"]
    return Snapshot(
        pools=_pools(indexes["pool_index"]),
        nodes={key: next(iter(store)) for key, store in node_index.items()},
        bound={key: tuple(store) for key, store in pod_index.items() if key != PENDING},
        pending=tuple(pod_index.get(PENDING, ())),
        policies=tuple(p for store in policy_index.values() for p in store),
        namespaces={key: next(iter(store)) for key, store in namespace_index.items()},
    )


def _pools(index: kopf.Index[str, dict[str, Any]]) -> dict[str, GPUNodePool]:
    pools: dict[str, GPUNodePool] = {}
    for name, store in index.items():
        body = next(iter(store))
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            continue  # being retired: plan nothing onto it
        try:
            pools[name] = GPUNodePool.from_body(body)
        except InvalidSpec:
            continue  # its own pass reports it
    return pools


def _invalid(body: kopf.Body, message: str, now: datetime) -> list[dict[str, Any]]:
    try:
        conditions = from_raw(GPUNodePoolStatus, dict(body.get("status") or {}), "status")
    except InvalidSpec:
        conditions = GPUNodePoolStatus()
    updated = set_condition(conditions.conditions, READY, "False", "InvalidSpec", message, now)
    return [cond.to_raw() for cond in updated]


def _write_status(body: kopf.Body, patch: kopf.Patch, status: Mapping[str, Any]) -> None:
    """Patch only the status fields that changed, so an idle pool writes nothing."""
    current = body.get("status") or {}
    for key, value in status.items():
        if current.get(key) != value:
            patch.status[key] = value
