"""Kopf handlers of the GPUNodePool controller: caches in, one pass per pool, status out.

Thin on purpose: Kopf indexes are the watch caches (Kopf starts no handler before every index
has listed its objects, which is the "decide only after the caches have synced" rule), a timer
per pool runs `controllers.capacity.CapacityController.reconcile_pool` in a thread, and the
result is written to status (only the fields that changed) and posted as Events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import kopf

from sparsam.api import constants as c
from sparsam.api.gpunodepool import GPUNodePool, GPUNodePoolStatus
from sparsam.api.parse import InvalidSpec
from sparsam.controllers.capacity import CapacityController, Snapshot
from sparsam.handlers import indexes
from sparsam.handlers.reporting import post, read, report
from sparsam.kube.podcache import PodViews
from sparsam.providers.nodepool import Transient


def register(
    registry: kopf.OperatorRegistry,
    interval: float,
    now: Callable[[], datetime],
) -> None:
    """Register the per-pool timer and the delete handler in `registry` (the indexes are
    `handlers.indexes`); the controller comes in through Kopf's memo (`memo.capacity`)."""

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
        pool = read(body, patch, GPUNodePool.from_body, GPUNodePoolStatus, moment)
        if pool is None:
            return
        snap = _snapshot(kwargs, memo.pods)
        if name not in snap.pools:
            return  # not in the index yet; the next tick has it
        controller: CapacityController = memo.capacity
        try:
            result = await asyncio.to_thread(controller.reconcile_pool, name, snap, moment)
        except Transient as exc:
            raise kopf.TemporaryError(str(exc), delay=interval) from exc
        report(body, patch, result)

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
                controller.retire_pool, pool, _snapshot(kwargs, memo.pods), now()
            )
        except Transient as exc:
            raise kopf.TemporaryError(str(exc), delay=interval) from exc
        post(body, events)
        if left:
            raise kopf.TemporaryError(f"draining {left} node(s) of the pool", delay=interval)


def _snapshot(kwargs: Mapping[str, Any], pods: PodViews) -> Snapshot:
    return Snapshot(
        pools=_pools(indexes.pools(kwargs)),
        nodes=indexes.nodes(kwargs),
        bound=pods.bound(),
        pending=pods.pending(),
        policies=indexes.policies(kwargs),
        namespaces=indexes.namespaces(kwargs),
    )


def _pools(bodies: Mapping[str, Mapping[str, Any]]) -> dict[str, GPUNodePool]:
    pools: dict[str, GPUNodePool] = {}
    for name, body in bodies.items():
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            continue  # being retired: plan nothing onto it
        try:
            pools[name] = GPUNodePool.from_body(body)
        except InvalidSpec:
            continue  # its own pass reports it
    return pools
