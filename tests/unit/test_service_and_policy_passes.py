"""`handlers.passes.Passes` with the InferenceService and CostPolicy passes: a wake request
goes ahead of the passes that are only due, and each pass reads its object and the caches
and writes its status. The controllers are the real ones on fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import kopf
from tests.unit.test_serving_controller import NOW, controller

from sparsam import main
from sparsam.api import constants as c
from sparsam.api.costpolicy import CostPolicy, CostPolicyStatus
from sparsam.api.inferenceservice import InferenceService, InferenceServiceStatus
from sparsam.config import OperatorConfig
from sparsam.controllers.costpolicy import CostPolicyController
from sparsam.controllers.results import Event
from sparsam.handlers.costpolicy import policy_pass
from sparsam.handlers.inferenceservice import serving_pass
from sparsam.handlers.passes import Passes
from sparsam.kube.podcache import PodViews

WOKE = "2026-11-22T11:59:59Z"


def service_body(wake: str | None = None) -> kopf.Body:
    return kopf.Body(
        {
            "metadata": {
                "name": "clf",
                "namespace": "web",
                "uid": "svc-uid",
                "generation": 1,
                "resourceVersion": "1",
                "annotations": {c.ANNOTATION_WAKE_REQUESTED: wake} if wake else {},
            },
            "spec": {"model": {"uri": "pvc://models/clf"}, "replicas": {"min": 0, "max": 2}},
            "status": {"observedGeneration": 1},
        }
    )


class Written:
    def __init__(self) -> None:
        self.status: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[Event] = []

    def write(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.status.append((namespace, name, status))

    def post(self, _: kopf.Body, events: Iterable[Event]) -> None:
        self.events.extend(events)


def test_a_wake_request_is_queued_ahead_of_passes_that_are_only_due_and_read_by_the_pass() -> None:
    async def test() -> None:
        ctl, actuator, _ = controller(0.0)
        written = Written()
        passes = Passes(
            InferenceService.from_body,
            InferenceServiceStatus,
            5.0,
            lambda: NOW,
            lambda: True,
            written.post,
        )
        caches: dict[str, Any] = {
            index: {} for index in ("deployment_index", "node_index", "pool_index", "policy_index")
        }
        caches["namespace_index"] = {}
        passes.start(serving_pass(ctl, PodViews(), caches), written.write)
        await passes.workers.stop()  # nothing takes from the queue: its order is what we see
        other = ("web", "other")
        passes.seen(other, service_body())  # listed again after a restart: only due
        passes.seen(("web", "clf"), service_body())
        passes.hurry(("web", "gone"))  # not watched (deleted): nothing to hurry
        assert len(passes.queue) == 2
        passes.seen(("web", "clf"), service_body(WOKE))  # the activator's annotation
        passes.hurry(("web", "clf"))
        assert await passes.queue.get() == ("web", "clf")
        assert len(passes.queue) == 1

        assert await passes.work(("web", "clf")) == 5.0
        assert actuator.replicas()["clf"] == 1  # woken from zero
        ((namespace, name, status),) = written.status
        assert (namespace, name, status["phase"]) == ("web", "clf", "Waking")

    asyncio.run(test())


def test_a_policy_pass_counts_what_the_spenders_accrued_and_writes_its_status() -> None:
    async def test() -> None:
        written = Written()
        passes = Passes(
            CostPolicy.from_body, CostPolicyStatus, 15.0, lambda: NOW, lambda: True, written.post
        )
        body = kopf.Body(
            {
                "metadata": {"name": "ml", "uid": "p-uid", "generation": 1},
                "spec": {"namespaceSelector": {"matchLabels": {"team": "ml"}}},
                "status": {},
            }
        )
        caches: dict[str, Any] = {
            "policy_index": {"ml": [CostPolicy.from_body(body)]},
            "namespace_index": {"ml": [{"team": "ml"}], "web": [{"team": "web"}]},
        }

        def job(namespace: str, accrued: float) -> dict[str, Any]:
            meta = {"name": "tj", "namespace": namespace, "uid": f"{namespace}-tj"}
            return {"metadata": meta, "status": {"cost": {"accrued": accrued}}}

        spenders = [job("ml", 1.0), job("web", 1.0)]
        passes.start(policy_pass(CostPolicyController(), caches, lambda: spenders), written.write)
        await passes.workers.stop()
        passes.seen(("", "ml"), body)
        assert await passes.work(("", "ml")) == 15.0
        spenders = [job("ml", 3.5), job("web", 9.0)]  # the next pass counts growth since
        assert await passes.work(("", "ml")) == 15.0
        first, second = (status for _, _, status in written.status)
        assert (first["spent"], first["matchedNamespaces"]) == (0.0, ["ml"])
        assert second["spent"] == 2.5  # the governed namespace's job only

    asyncio.run(test())


def test_the_queued_kinds_have_no_timer_or_changing_handler_and_each_stops_its_passes() -> None:
    """What a finalizer would come from (a timer, a daemon, a changing handler) is on
    GPUNodePools only; each kind's passes stop at cleanup under an id of their own."""
    registry = main.registry(OperatorConfig())
    finalizing = {
        handler.selector.any_name
        for handler in (
            *registry._changing.get_all_handlers(),
            *registry._spawning.get_all_handlers(),
        )
        if handler.selector is not None
    }
    assert finalizing == {c.GPU_NODE_POOL.plural}
    queued = (c.TRAINING_JOB, c.INFERENCE_SERVICE, c.COST_POLICY)
    watched = {h.selector.any_name for h in registry._watching.get_all_handlers() if h.selector}
    assert watched == {kind.plural for kind in queued}
    cleanup = [h.id for h in registry._activities.get_all_handlers() if h.activity == "cleanup"]
    assert sorted(cleanup) == sorted(f"stop-{kind.plural}" for kind in queued)


def test_a_pass_that_finds_nothing_changed_makes_no_call() -> None:
    async def test() -> None:
        written = Written()
        passes = Passes(
            CostPolicy.from_body, CostPolicyStatus, 15.0, lambda: NOW, lambda: True, written.post
        )
        raw: dict[str, Any] = {
            "metadata": {"name": "ml", "uid": "p-uid", "generation": 1, "resourceVersion": "1"},
            "spec": {"namespaceSelector": {"matchLabels": {"team": "ml"}}},
            "status": {},
        }
        caches: dict[str, Any] = {
            "policy_index": {"ml": [CostPolicy.from_body(kopf.Body(raw))]},
            "namespace_index": {"ml": [{"team": "ml"}]},
        }
        passes.start(policy_pass(CostPolicyController(), caches, lambda: []), written.write)
        await passes.workers.stop()
        passes.seen(("", "ml"), kopf.Body(raw))
        await passes.work(("", "ml"))
        ((_, _, status),) = written.status
        # The watch brings our own write back; the next pass finds the same and writes nothing.
        passes.seen(("", "ml"), kopf.Body({**raw, "status": status}))
        await passes.work(("", "ml"))
        assert len(written.status) == 1

    asyncio.run(test())
