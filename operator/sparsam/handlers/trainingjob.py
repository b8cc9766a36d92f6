"""Kopf handlers of the TrainingJob controller: one pass per job on a timer, status out.

Thin: the job and its worker pods come from the caches (`handlers.indexes`), the pass is
`controllers.training.TrainingController.reconcile` (in a thread), and its result is written to
status (only what changed) and posted as Events. A spec the model cannot read (what CEL
cannot express) becomes Ready=False with reason InvalidSpec; nothing crashes, nothing retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import kopf

from sparsam.api import constants as c
from sparsam.api.trainingjob import TrainingJob, TrainingJobStatus
from sparsam.controllers.training import TrainingController
from sparsam.decisions.policy import effective_policy
from sparsam.handlers import indexes
from sparsam.handlers.reporting import LastParsed, read, report
from sparsam.kube.errors import ApiRefused


def register(registry: kopf.OperatorRegistry, interval: float, now: Callable[[], datetime]) -> None:
    parse = LastParsed(TrainingJob.from_body)

    @kopf.timer(
        c.GROUP,
        c.VERSION,
        c.TRAINING_JOB.plural,
        interval=interval,
        id="workers",
        registry=registry,
    )
    async def workers(
        name: str,
        namespace: str | None,
        body: kopf.Body,
        patch: kopf.Patch,
        memo: Any,
        **kwargs: Any,
    ) -> None:
        moment = now()
        job = read(body, patch, parse, TrainingJobStatus, moment)
        if job is None:
            return
        controller: TrainingController = memo.training
        pods = indexes.workers(kwargs, namespace or "", name)
        try:
            result = await asyncio.to_thread(
                controller.reconcile,
                job,
                pods,
                indexes.nodes_of(kwargs, pods),
                moment,
                indexes.pools(kwargs),
                effective_policy(
                    indexes.policies(kwargs),
                    indexes.namespaces(kwargs).get(namespace or "", {}),
                ),
            )
        except ApiRefused as exc:
            # e.g. a quota or an admission webhook; said once per retry, in the log and an Event.
            kopf.warn(body, reason="ApiRefused", message=str(exc))
            raise kopf.TemporaryError(str(exc), delay=max(interval, 10.0)) from exc
        report(body, patch, result)

    @kopf.on.event(c.GROUP, c.VERSION, c.TRAINING_JOB.plural, id="forget", registry=registry)
    async def forget(
        type: str, uid: str, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
    ) -> None:
        """Workers go with the job (owner references); only the memory needs clearing. A
        watching handler rather than on.delete: a changing handler would have Kopf compute a
        diff of every job on each of its (frequent) status writes. Async, so that the other
        events cost no thread hop; the forgetting waits for a pass of the job to end, in a
        thread."""
        if type != "DELETED":
            return
        parse.forget(uid)
        controller: TrainingController = memo.training
        phase = (body.get("status") or {}).get("phase")
        await asyncio.to_thread(controller.forget, uid, namespace or "", name, phase)
