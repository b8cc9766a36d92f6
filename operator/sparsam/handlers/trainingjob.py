"""Kopf handlers of the TrainingJob controller: jobs' events in, one pass per job from a work
queue (`handlers.passes`), status out.

Thin: a watching handler gives each job's latest body to the passes. A pass reads the job's
pods and nodes from the caches (`kube.podcache`, `handlers.indexes`) and runs
`controllers.training.TrainingController.reconcile`. With no timer and no deletion handler,
Kopf puts no finalizer on TrainingJobs; a job's pods and Service go with it through their
owner references.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import kopf

from sparsam.api import constants as c
from sparsam.api.trainingjob import TrainingJob, TrainingJobStatus
from sparsam.controllers.results import PassResult
from sparsam.controllers.training import TrainingController
from sparsam.handlers import indexes
from sparsam.handlers.pacing import TokenBucket
from sparsam.handlers.passes import Key, Passes, Reconcile, WriteStatus
from sparsam.kube.podcache import PodViews


def training_pass(
    controller: TrainingController, pods: PodViews, caches: Mapping[str, Any]
) -> Reconcile[TrainingJob]:
    """A job's pass, reading its pods from `pods` and the rest from `caches`
    (`indexes.live`)."""

    def reconcile(job: TrainingJob, _: kopf.Body, moment: datetime) -> PassResult:
        namespace, name = job.metadata.namespace, job.metadata.name
        workers = pods.workers(namespace, name)
        return controller.reconcile(
            job,
            workers,
            indexes.nodes_of(caches, workers),
            moment,
            indexes.pools(caches),
            indexes.policy_of(caches, namespace),
            lambda: indexes.nodes(caches).values(),
        )

    return reconcile


def register(
    registry: kopf.OperatorRegistry,
    interval: float,
    now: Callable[[], datetime],
    active: Callable[[], bool],
    reports: TokenBucket,
) -> Passes[TrainingJob]:
    """Register the handlers; the passes they feed (whose bodies CostPolicies count)."""
    passes = Passes(
        TrainingJob.from_body, TrainingJobStatus, interval, now, active, reports=reports
    )

    def start(memo: Any, caches: Mapping[str, Any]) -> tuple[Reconcile[TrainingJob], WriteStatus]:
        controller: TrainingController = memo.training
        return training_pass(controller, memo.pods, caches), controller.write_status

    def forget(memo: Any, uid: str, key: Key, body: kopf.Body) -> None:
        phase = (body.get("status") or {}).get("phase")
        memo.training.forget(uid, *key, phase)

    passes.register(registry, c.TRAINING_JOB, start, forget)
    return passes
