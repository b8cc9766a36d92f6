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
from sparsam.handlers.pacing import TokenBucket
from sparsam.handlers.passes import Key, Passes, Reconcile, WriteStatus
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
    reports: TokenBucket,
) -> Passes[InferenceService]:
    """Register the handlers; the passes they feed (whose bodies CostPolicies count)."""
    passes = Passes(
        InferenceService.from_body, InferenceServiceStatus, interval, now, active, reports=reports
    )

    def start(
        memo: Any, caches: Mapping[str, Any]
    ) -> tuple[Reconcile[InferenceService], WriteStatus]:
        return serving_pass(memo.serving, memo.pods, caches), memo.serving_status

    def forget(memo: Any, uid: str, key: Key, _: kopf.Body) -> None:
        memo.serving.forget(uid, *key)

    def wake(memo: Any, key: Key, body: kopf.Body) -> None:
        uid = str((body.get("metadata") or {}).get("uid"))
        if memo.serving.wake_pending(uid, _wake_at(body)):
            passes.hurry(key)

    passes.register(registry, c.INFERENCE_SERVICE, start, forget, wake)
    return passes
