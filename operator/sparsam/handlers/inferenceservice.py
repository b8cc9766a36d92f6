"""Kopf handlers of the InferenceService controller: a pass per service on a timer, and at once
on a wake request.

Thin: the service, its Deployments and replica pods come from the caches
(`handlers.indexes`), the pass is `controllers.serving.ServingController.reconcile` (in a
thread: it queries Prometheus and calls the apiserver), and its result is written to status
(only what changed) and posted as Events.

The activator asks for a wake by setting the `sparsam.dev/wake-requested-at` annotation; the
event handler sees the change in the watch and runs the pass without waiting for the timer,
so a request held at zero replicas waits for the cold start only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import kopf

from sparsam.api import constants as c
from sparsam.api.conditions import parse_rfc3339
from sparsam.api.inferenceservice import InferenceService, InferenceServiceStatus
from sparsam.controllers.serving import ServingController
from sparsam.decisions.policy import effective_policy
from sparsam.handlers import indexes
from sparsam.handlers.reporting import read, report
from sparsam.kube.errors import ApiRefused


def _wake_at(body: kopf.Body) -> datetime | None:
    annotations: Mapping[str, str] = (body.get("metadata") or {}).get("annotations") or {}
    try:
        return parse_rfc3339(annotations.get(c.ANNOTATION_WAKE_REQUESTED))
    except ValueError:
        return None  # not ours to fix; the next request's wake overwrites it


def register(registry: kopf.OperatorRegistry, interval: float, now: Callable[[], datetime]) -> None:
    async def reconcile(
        body: kopf.Body, patch: kopf.Patch, memo: Any, kwargs: Mapping[str, Any]
    ) -> None:
        moment = now()
        svc = read(body, patch, InferenceService.from_body, InferenceServiceStatus, moment)
        if svc is None:
            return
        controller: ServingController = memo.serving
        namespace, name = svc.metadata.namespace, svc.metadata.name
        pods = memo.pods.replicas(namespace, name)
        try:
            result = await asyncio.to_thread(
                controller.reconcile,
                svc,
                _wake_at(body),
                indexes.deployments(kwargs, namespace, name),
                pods,
                indexes.nodes_of(kwargs, pods),
                indexes.pools(kwargs),
                effective_policy(
                    indexes.policies(kwargs), indexes.namespaces(kwargs).get(namespace, {})
                ),
                moment,
            )
        except ApiRefused as exc:
            kopf.warn(body, reason="ApiRefused", message=str(exc))
            raise kopf.TemporaryError(str(exc), delay=max(interval, 10.0)) from exc
        report(body, patch, result)

    @kopf.timer(
        c.GROUP,
        c.VERSION,
        c.INFERENCE_SERVICE.plural,
        interval=interval,
        id="replicas",
        registry=registry,
    )
    async def replicas(body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
        await reconcile(body, patch, memo, kwargs)

    @kopf.on.event(c.GROUP, c.VERSION, c.INFERENCE_SERVICE.plural, id="wake", registry=registry)
    async def wake(type: str, body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
        controller: ServingController = memo.serving
        if type == "DELETED":
            meta = body.get("metadata") or {}
            controller.forget(
                str(meta.get("uid")), str(meta.get("namespace")), str(meta.get("name"))
            )
            return
        try:
            svc = InferenceService.from_body(body)
        except ValueError:
            return  # the timer reports it
        if controller.wake_pending(svc, _wake_at(body)):
            await reconcile(body, patch, memo, kwargs)
