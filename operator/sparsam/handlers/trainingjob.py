"""Kopf handlers of the TrainingJob controller: jobs' events in, one pass per job from a work
queue, status out.

Thin: a watching handler keeps each job's latest body and queues the job when it is new or its
spec changed (`metadata.generation`); after each pass the job is queued again `interval`
seconds later, which is what notices lost nodes, deadlines and cost. The pass reads the job's
pods and nodes from the caches (`handlers.indexes`), runs
`controllers.training.TrainingController.reconcile` in a thread, writes the status fields
that changed, and posts the Events.

Not a Kopf timer per job (see `handlers.workqueue`): with no timer and no deletion handler,
Kopf puts no finalizer on TrainingJobs, and takes off the one an older version put there. A
job's pods and Service go with it through their owner references.

A spec the model cannot read (what CEL cannot express) becomes Ready=False with reason
InvalidSpec; nothing crashes, and nothing is retried until the spec changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import kopf

from sparsam.api import constants as c
from sparsam.api.parse import InvalidSpec
from sparsam.api.trainingjob import TrainingJob, TrainingJobStatus
from sparsam.controllers.results import PassResult
from sparsam.controllers.training import TrainingController
from sparsam.decisions.policy import effective_policy
from sparsam.handlers import indexes
from sparsam.handlers.reporting import LastParsed, changed, invalid_spec, post
from sparsam.handlers.workqueue import Workers, WorkQueue
from sparsam.kube.client import CONNECTIONS
from sparsam.kube.errors import ApiRefused

Key = tuple[str, str]  # namespace, name


def register(
    registry: kopf.OperatorRegistry,
    interval: float,
    now: Callable[[], datetime],
    active: Callable[[], bool] = lambda: True,
) -> None:
    """`active`: whether this replica may act now (`kube.peering.PeeringGate`); a pass due
    while it may not is put off by `interval`."""
    parse = LastParsed(TrainingJob.from_body)
    bodies: dict[Key, kopf.Body] = {}
    caches: dict[str, Any] = {}
    training: list[TrainingController] = []  # Kopf's memo.training, once a handler ran

    async def work(key: Key) -> float | None:
        body = bodies.get(key)
        if body is None:
            return None  # deleted
        if not active():
            return interval
        namespace, name = key
        controller = training[0]
        moment = now()
        job: TrainingJob | None = None
        try:
            job = parse(body)  # on the event loop: LastParsed takes no lock
        except InvalidSpec as exc:
            invalid = invalid_spec(body, TrainingJobStatus, str(exc), moment)

        def run() -> PassResult | None:
            if job is None:
                controller.write_status(namespace, name, changed(body, invalid))
                return None
            pods = indexes.workers(caches, namespace, name)
            result = controller.reconcile(
                job,
                pods,
                indexes.nodes_of(caches, pods),
                moment,
                indexes.pools(caches),
                effective_policy(
                    indexes.policies(caches), indexes.namespaces(caches).get(namespace, {})
                ),
            )
            controller.write_status(namespace, name, changed(body, result.status))
            return result

        try:
            result = await asyncio.to_thread(run)
        except ApiRefused as exc:
            # e.g. a quota or an admission webhook; said once per retry, in the log and an Event.
            kopf.warn(body, reason="ApiRefused", message=str(exc))
            return max(interval, 10.0)
        if result is None:
            return None  # an invalid spec: nothing to do until it changes
        post(body, result.events)
        return interval

    queue: WorkQueue[Key] = WorkQueue()
    workers = Workers(queue, work, count=CONNECTIONS, retry=interval)

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
            bodies.pop(key, None)
            workers.forget(key)
            parse.forget(uid)
            # Waits for a pass of the job that is under way to end, in a thread.
            phase = (body.get("status") or {}).get("phase")
            await asyncio.to_thread(memo.training.forget, uid, key[0], name, phase)
            return
        if not workers.started:
            # Kopf runs no handler before every index has listed its objects: from here on,
            # the caches are synced and a pass may read them.
            caches.update(indexes.live(kwargs))
            training.append(memo.training)
            workers.start()
        before = bodies.get(key)
        bodies[key] = body
        if before is None or _generation(before) != _generation(body):
            queue.add(key)

    @kopf.on.cleanup(registry=registry)
    async def stop_passes(**_: Any) -> None:
        await workers.stop()


def _generation(body: kopf.Body) -> Any:
    return (body.get("metadata") or {}).get("generation")
