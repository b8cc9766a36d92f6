"""Kopf handlers of the TrainingJob controller: jobs' events in, one pass per job from a work
queue (`handlers.passes`), status out.

Thin: a watching handler gives each job's latest body to the passes. A pass reads the job's
pods and nodes from the caches (`kube.podcache`, `handlers.indexes`) and runs
`controllers.training.TrainingController.reconcile`. With no timer and no deletion handler,
Kopf puts no finalizer on TrainingJobs; a job's pods and Service go with it through their
owner references.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import kopf

from sparsam.api import constants as c
from sparsam.api.trainingjob import TrainingJob, TrainingJobStatus
from sparsam.controllers.results import PassResult
from sparsam.controllers.training import TrainingController
from sparsam.handlers import indexes
from sparsam.handlers.passes import Passes, Reconcile
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
        )

    return reconcile


def register(
    registry: kopf.OperatorRegistry,
    interval: float,
    now: Callable[[], datetime],
    active: Callable[[], bool],
) -> Passes[TrainingJob]:
    """Register the handlers; the passes they feed (whose bodies CostPolicies count)."""
    passes = Passes(TrainingJob.from_body, TrainingJobStatus, interval, now, active)

    @kopf.on.event(c.GROUP, c.VERSION, c.TRAINING_JOB.plural, id="queue", registry=registry)
    async def queue_job(
        type: str | None,
        uid: str,
        namespace: str | None,
        name: str,
        body: kopf.Body,
        memo: Any,
        **kwargs: Any,
    ) -> None:
        """A watching handler: no diff of the job is computed, no state is kept on it."""
        key = (namespace or "", name)
        if type == "DELETED":
            passes.gone(key, uid)
            # Waits for a pass of the job that is under way to end, in a thread.
            phase = (body.get("status") or {}).get("phase")
            await asyncio.to_thread(memo.training.forget, uid, key[0], name, phase)
            return
        if not passes.started:
            # Kopf runs no handler before every index has listed its objects (nor starts
            # before the pods have), so the caches are synced; and `kopf.event` finds Kopf's
            # Event poster through this handler's context, which the workers started here
            # inherit.
            controller: TrainingController = memo.training
            passes.start(
                training_pass(controller, memo.pods, indexes.live(kwargs)), controller.write_status
            )
        passes.seen(key, body)

    @kopf.on.cleanup(registry=registry)
    async def stop_passes(**_: Any) -> None:
        await passes.workers.stop()

    return passes
