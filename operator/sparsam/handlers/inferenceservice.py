"""Kopf handlers of the InferenceService controller: services' events in, one pass per service
from a work queue (`handlers.passes`), and one at once on a wake request.

Thin: the service's Deployments and replica pods come from the caches (`handlers.indexes`,
`kube.podcache`), and the pass is `controllers.serving.ServingController.reconcile` (it
queries Prometheus and calls the apiserver).

The activator asks for a wake by setting the `sparsam.dev/wake-requested-at` annotation; the
watching handler sees the change and queues a pass ahead of those only due, so a request held
at zero replicas waits for the cold start only.
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
from sparsam.controllers.results import PassResult
from sparsam.controllers.serving import ServingController
from sparsam.handlers import indexes
from sparsam.handlers.passes import Passes, Reconcile
from sparsam.kube.podcache import PodViews


def _wake_at(body: kopf.Body) -> datetime | None:
    annotations: Mapping[str, str] = (body.get("metadata") or {}).get("annotations") or {}
    try:
        return parse_rfc3339(annotations.get(c.ANNOTATION_WAKE_REQUESTED))
    except ValueError:
        return None  # not ours to fix; the next request's wake overwrites it


def serving_pass(
    controller: ServingController, pods: PodViews, caches: Mapping[str, Any]
) -> Reconcile[InferenceService]:
    """A service's pass, reading its replicas from `pods` and the rest from `caches`
    (`indexes.live`)."""

    def reconcile(svc: InferenceService, body: kopf.Body, moment: datetime) -> PassResult:
        namespace, name = svc.metadata.namespace, svc.metadata.name
        replicas = pods.replicas(namespace, name)
        return controller.reconcile(
            svc,
            _wake_at(body),
            indexes.deployments(caches, namespace, name),
            replicas,
            indexes.nodes_of(caches, replicas),
            indexes.pools(caches),
            indexes.policy_of(caches, namespace),
            moment,
        )

    return reconcile


def register(
    registry: kopf.OperatorRegistry,
    interval: float,
    now: Callable[[], datetime],
    active: Callable[[], bool],
) -> Passes[InferenceService]:
    """Register the handlers; the passes they feed (whose bodies CostPolicies count)."""
    passes = Passes(InferenceService.from_body, InferenceServiceStatus, interval, now, active)

    @kopf.on.event(c.GROUP, c.VERSION, c.INFERENCE_SERVICE.plural, id="queue", registry=registry)
    async def queue_service(
        type: str | None,
        uid: str,
        namespace: str | None,
        name: str,
        body: kopf.Body,
        memo: Any,
        **kwargs: Any,
    ) -> None:
        """A watching handler: no diff of the service is computed, no state is kept on it."""
        key = (namespace or "", name)
        controller: ServingController = memo.serving
        if type == "DELETED":
            passes.gone(key, uid)
            # Waits for a pass of the service that is under way to end, in a thread.
            await asyncio.to_thread(controller.forget, uid, key[0], name)
            return
        if not passes.started:
            # As for TrainingJobs (`handlers.trainingjob`): the caches are synced by now, and
            # the workers inherit this handler's context, where `kopf.event` finds its poster.
            passes.start(
                serving_pass(controller, memo.pods, indexes.live(kwargs)), memo.serving_status
            )
        passes.seen(key, body)
        if controller.wake_pending(uid, _wake_at(body)):
            passes.hurry(key)

    @kopf.on.cleanup(registry=registry)
    async def stop_passes(**_: Any) -> None:
        await passes.workers.stop()

    return passes
