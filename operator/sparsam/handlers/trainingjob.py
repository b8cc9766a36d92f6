"""Kopf handlers of the TrainingJob controller: jobs' events in, one pass per job from a work
queue, status out.

Thin: a watching handler gives each job's latest body to `TrainingPasses`, which queues the
job when it is new or its spec changed (`metadata.generation`), ahead of every other job
when its status says no pass has acted on that spec yet; after each pass the job is queued
again `interval` seconds later, which is what notices lost nodes, deadlines and cost.
The pass reads the job's pods and nodes from the caches (`kube.podcache`,
`handlers.indexes`), runs `controllers.training.TrainingController.reconcile` in a thread,
writes the status fields that changed, and posts the Events.

Not a Kopf timer per job (see `handlers.workqueue`): with no timer and no deletion handler,
Kopf puts no finalizer on TrainingJobs, and takes off the one an older version put there. A
job's pods and Service go with it through their owner references.

A spec the model cannot read (what CEL cannot express) becomes Ready=False with reason
InvalidSpec; nothing crashes, and nothing is retried until the spec changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import kopf

from sparsam.api import constants as c
from sparsam.api.parse import InvalidSpec
from sparsam.api.trainingjob import TrainingJob, TrainingJobStatus
from sparsam.controllers.results import Event, PassResult
from sparsam.controllers.training import TrainingController
from sparsam.decisions.policy import effective_policy
from sparsam.handlers import indexes
from sparsam.handlers.reporting import LastParsed, changed, invalid_spec, post
from sparsam.handlers.workqueue import Workers, WorkQueue
from sparsam.kube.client import PASS_THREADS
from sparsam.kube.errors import ApiRefused
from sparsam.kube.podcache import PodViews

Key = tuple[str, str]  # namespace, name
Post = Callable[[kopf.Body, Iterable[Event]], None]


class TrainingPasses:
    """Every job's latest body, the queue of jobs due a pass, and the pass.

    `active`: whether this replica may act now (`kube.peering.PeeringGate`); a pass due while
    it may not is put off by `interval`. `post`: how Events are posted (Kopf's poster)."""

    def __init__(
        self,
        interval: float,
        now: Callable[[], datetime],
        active: Callable[[], bool],
        post: Post = post,
    ) -> None:
        self._interval = interval
        self._now = now
        self._active = active
        self._post = post
        self._parse = LastParsed(TrainingJob.from_body)
        self._bodies: dict[Key, kopf.Body] = {}
        self._caches: Mapping[str, Any] = {}
        self._pods = PodViews()
        self._controller: TrainingController | None = None
        self.queue: WorkQueue[Key] = WorkQueue()
        self.workers = Workers(self.queue, self.work, count=PASS_THREADS, retry=interval)

    def start(
        self, controller: TrainingController, pods: PodViews, caches: Mapping[str, Any]
    ) -> None:
        """Start the passes, reading `pods` and `caches` (`indexes.live`): synced by now."""
        self._controller, self._pods, self._caches = controller, pods, caches
        self.workers.start()

    def seen(self, key: Key, body: kopf.Body) -> None:
        """The job as the watch shows it now: queued if it is new to us or its spec changed,
        ahead of the passes that are only due if no pass has acted on this spec yet (a new
        job, an edit; not a job listed again after a restart)."""
        before = self._bodies.get(key)
        self._bodies[key] = body
        generation = _generation(body)
        if before is None or _generation(before) != generation:
            observed = (body.get("status") or {}).get("observedGeneration")
            self.queue.add(key, urgent=observed != generation)

    def gone(self, key: Key, uid: str) -> None:
        self._bodies.pop(key, None)
        self.workers.forget(key)
        self._parse.forget(uid)

    async def work(self, key: Key) -> float | None:
        """One pass for the job `key`; the seconds until its next one (None: none due)."""
        body = self._bodies.get(key)
        controller = self._controller
        if body is None or controller is None:
            return None  # deleted
        if not self._active():
            return self._interval
        namespace, name = key
        moment = self._now()
        job: TrainingJob | None = None
        try:
            job = self._parse(body)  # on the event loop: LastParsed takes no lock
        except InvalidSpec as exc:
            invalid = invalid_spec(body, TrainingJobStatus, str(exc), moment)

        def run() -> PassResult | None:
            if job is None:
                controller.write_status(namespace, name, changed(body, invalid))
                return None
            pods = self._pods.workers(namespace, name)
            result = controller.reconcile(
                job,
                pods,
                indexes.nodes_of(self._caches, pods),
                moment,
                indexes.pools(self._caches),
                effective_policy(
                    indexes.policies(self._caches),
                    indexes.namespaces(self._caches).get(namespace, {}),
                ),
            )
            controller.write_status(namespace, name, changed(body, result.status))
            return result

        try:
            result = await asyncio.to_thread(run)
        except ApiRefused as exc:
            # e.g. a quota or an admission webhook; said once per retry, in the log and an Event.
            self._post(body, (Event("Warning", "ApiRefused", str(exc)),))
            return max(self._interval, 10.0)
        if result is None:
            return None  # an invalid spec: nothing to do until it changes
        self._post(body, result.events)
        return self._interval


def register(
    registry: kopf.OperatorRegistry,
    interval: float,
    now: Callable[[], datetime],
    active: Callable[[], bool],
) -> None:
    passes = TrainingPasses(interval, now, active)

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
        if not passes.workers.started:
            # Kopf runs no handler before every index has listed its objects (nor starts
            # before the pods have), so the caches are synced; and `kopf.event` finds Kopf's
            # Event poster through this handler's context, which the workers started here
            # inherit.
            passes.start(memo.training, memo.pods, indexes.live(kwargs))
        passes.seen(key, body)

    @kopf.on.cleanup(registry=registry)
    async def stop_passes(**_: Any) -> None:
        await passes.workers.stop()


def _generation(body: kopf.Body) -> Any:
    return (body.get("metadata") or {}).get("generation")
