"""A pass per object from a work queue: the glue between Kopf's watch of one kind and its
controller's pass, for TrainingJobs, InferenceServices and CostPolicies.

A watching handler (`Passes.register`) gives each object's latest body to `Passes.seen`, which
queues the object when it is new or its spec changed (`metadata.generation`), ahead of every
other object when its status says no pass has acted on that spec yet; after each pass the
object is queued again `interval` seconds later. A pass parses the object, runs the
controller's reconcile in a thread, writes the status fields that changed, and posts the
Events. Status reports are paced (`handlers.pacing`): in a burst, a report that finds no token
is left to the object's next pass.

Not a Kopf timer per object (see `handlers.workqueue`): with no timer and no deletion handler,
Kopf puts no finalizer on these kinds, and takes off the one an older version put there, so
deleting an object never waits for the operator (nor hangs once it is uninstalled).

A spec the model cannot read (what CEL cannot express) becomes Ready=False with reason
InvalidSpec; nothing crashes, and nothing is retried until the spec changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import kopf

from sparsam.api import constants as c
from sparsam.api.parse import InvalidSpec
from sparsam.controllers.repeats import Repeats
from sparsam.controllers.results import Event, PassResult
from sparsam.handlers import indexes
from sparsam.handlers.pacing import TokenBucket
from sparsam.handlers.reporting import LastParsed, StatusType, changed, invalid_spec, post
from sparsam.handlers.workqueue import Workers, WorkQueue
from sparsam.kube.client import PASS_THREADS
from sparsam.kube.errors import ApiRefused

M = TypeVar("M")
#: How long an unchanged ApiRefused Event is counted rather than posted again.
REFUSALS_REPEAT_EVERY = timedelta(minutes=10)
Key = tuple[str, str]  # namespace ("" for a cluster-scoped kind), name
Post = Callable[[kopf.Body, Iterable[Event]], None]
#: One pass for an object: its model, its body as watched, and the moment. Run in a thread.
Reconcile = Callable[[M, kopf.Body, datetime], PassResult]
#: Merges the status fields that changed into the object's (namespace, name, fields).
WriteStatus = Callable[[str, str, dict[str, Any]], None]
#: The pass and its status writer, from Kopf's memo and the caches (`indexes.live`).
Starter = Callable[[Any, Mapping[str, Any]], tuple[Reconcile[M], WriteStatus]]
#: What to drop of a deleted object (memo, uid, key, its last body). Run in a thread, so it
#: may wait for a pass of the object that is under way.
Forget = Callable[[Any, str, Key, kopf.Body], None]
#: Anything else an event of an object asks for (memo, key, body), e.g. a wake.
OnEvent = Callable[[Any, Key, kopf.Body], None]


class Passes(Generic[M]):
    """Every object's latest body, the queue of objects due a pass, and the pass.

    `model` parses a body (`InvalidSpec` for a spec it cannot read); `active`: whether this
    replica may act now (`kube.peering.PeeringGate`), a pass due while it may not is put off by
    `interval`; `post`: how Events are posted (Kopf's poster); `reports`: the pace of status
    reports, None for none (never of the spec-is-invalid report: no later pass would write
    it)."""

    def __init__(
        self,
        model: Callable[[kopf.Body], M],
        status_type: StatusType,
        interval: float,
        now: Callable[[], datetime],
        active: Callable[[], bool],
        post: Post = post,
        reports: TokenBucket | None = None,
    ) -> None:
        self._parse = LastParsed(model)
        self._status_type = status_type
        self._interval = interval
        self._now = now
        self._active = active
        self._post = post
        self._reports = reports
        self._bodies: dict[Key, kopf.Body] = {}
        self._pass: tuple[Reconcile[M], WriteStatus] | None = None
        #: A refusal that stays (a label key the apiserver rejects, a quota) is met on every
        #: retry: said once per window, counted meanwhile. Used on the event loop only.
        self._refusals = Repeats(None, every=REFUSALS_REPEAT_EVERY)
        self.queue: WorkQueue[Key] = WorkQueue()
        self.workers = Workers(self.queue, self.work, count=PASS_THREADS, retry=interval)

    @property
    def started(self) -> bool:
        return self.workers.started

    def start(self, reconcile: Reconcile[M], write_status: WriteStatus) -> None:
        """Start the passes, once the caches `reconcile` reads have synced."""
        self._pass = (reconcile, write_status)
        self.workers.start()

    def register(
        self,
        registry: kopf.OperatorRegistry,
        resource: c.Resource,
        start: Starter[M],
        forget: Forget,
        on_event: OnEvent | None = None,
    ) -> None:
        """A watching handler of `resource` that feeds these passes (no diff of the object is
        computed, no state kept on it), and their stop at Kopf's cleanup."""

        @kopf.on.event(c.GROUP, c.VERSION, resource.plural, id="queue", registry=registry)
        async def queue(
            type: str | None,
            uid: str,
            namespace: str | None,
            name: str,
            body: kopf.Body,
            memo: Any,
            **kwargs: Any,
        ) -> None:
            key = (namespace or "", name)
            if type == "DELETED":
                self.gone(key, uid)
                await asyncio.to_thread(forget, memo, uid, key, body)
                return
            if not self.started:
                # Kopf runs no handler before every index has listed its objects (nor starts
                # before the pods have), so the caches are synced; and `kopf.event` finds
                # Kopf's Event poster through this handler's context, which the workers
                # started here inherit.
                self.start(*start(memo, indexes.live(kwargs)))
            self.seen(key, body)
            if on_event is not None:
                on_event(memo, key, body)

        # An id of its own: Kopf keeps an activity's state by handler id, and the three
        # kinds' `stop` would otherwise share one (their qualified name).
        @kopf.on.cleanup(id=f"stop-{resource.plural}", registry=registry)
        async def stop(**_: Any) -> None:
            await self.workers.stop()

    def seen(self, key: Key, body: kopf.Body) -> None:
        """The object as the watch shows it now: queued if it is new to us or its spec
        changed, ahead of the passes that are only due if no pass has acted on this spec yet
        (a new object, an edit; not one listed again after a restart)."""
        before = self._bodies.get(key)
        self._bodies[key] = body
        generation = _generation(body)
        if before is None or _generation(before) != generation:
            observed = (body.get("status") or {}).get("observedGeneration")
            self.queue.add(key, urgent=observed != generation)

    def bodies(self) -> list[kopf.Body]:
        """Every object's latest body. Safe from any thread: the copy is made in one call that
        no other thread's Python code runs within (the GIL), though `seen` runs on the loop."""
        return list(self._bodies.values())

    def hurry(self, key: Key) -> None:
        """A pass for `key` as soon as a worker is free, ahead of those only due."""
        if key in self._bodies:
            self.queue.add(key, urgent=True)

    def gone(self, key: Key, uid: str) -> None:
        self._refusals.forget(uid)
        self._bodies.pop(key, None)
        self.workers.forget(key)
        self._parse.forget(uid)

    async def work(self, key: Key) -> float | None:
        """One pass for the object `key`; the seconds until its next one (None: none due)."""
        body = self._bodies.get(key)
        if body is None or self._pass is None:
            return None  # deleted
        if not self._active():
            return self._interval
        reconcile, write_status = self._pass
        namespace, name = key
        moment = self._now()
        model: M | None = None
        try:
            model = self._parse(body)  # on the event loop: LastParsed takes no lock
        except InvalidSpec as exc:
            invalid = invalid_spec(body, self._status_type, str(exc), moment)

        def write(status: dict[str, Any], paced: bool) -> None:
            """Only the fields that differ from the object's: an idle object costs no call."""
            fields = changed(body, status)
            if not fields:
                return
            if paced and self._reports and not self._reports.take(update=bool(body.get("status"))):
                return
            write_status(namespace, name, fields)

        def run() -> PassResult | None:
            if model is None:
                write(invalid, paced=False)
                return None
            result = reconcile(model, body, moment)
            write(result.status, paced=True)
            return result

        try:
            result = await asyncio.to_thread(run)
        except ApiRefused as exc:
            # e.g. a quota or an admission webhook: in an Event, once per window while it
            # stays the same refusal.
            uid = str((body.get("metadata") or {}).get("uid", ""))
            refusal = (Event("Warning", "ApiRefused", str(exc)),)
            self._post(body, self._refusals.quieted(uid, refusal, moment))
            return max(self._interval, 10.0)
        if result is None:
            return None  # an invalid spec: nothing to do until it changes
        self._post(body, result.events)
        return self._interval


def _generation(body: kopf.Body) -> Any:
    return (body.get("metadata") or {}).get("generation")
