"""One pass of the TrainingJob controller on a fake actuator: what it creates and deletes,
and that a lost worker is counted once, whether its pod failed, lingers or vanished."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sparsam.api.trainingjob import TrainingJob
from sparsam.controllers.training import TrainingController

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@dataclass
class FakeActuator:
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    services: int = 0

    def apply_service(self, manifest: dict[str, Any]) -> None:
        self.services += 1

    def create_pod(self, manifest: dict[str, Any]) -> bool:
        self.created.append(manifest["metadata"]["name"])
        return True

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        self.deleted.append(name)


def job(status: dict[str, Any] | None = None) -> TrainingJob:
    return TrainingJob.from_body(
        {
            "metadata": {"name": "tj", "namespace": "ml", "uid": "job-uid", "generation": 3},
            "spec": {"image": "t:1", "workers": {"min": 1, "max": 2}},
            "status": status or {},
        }
    )


def pod(index: int, node: str = "n1", phase: str = "Running", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"tj-worker-{index}",
            "uid": f"pod-{index}",
            "labels": {"sparsam.dev/worker-index": str(index)},
        },
        "spec": {"nodeName": node},
        "status": {"phase": phase, **status},
    }


NODE = {
    "metadata": {"name": "n1", "creationTimestamp": "2026-11-22T10:00:00Z"},
    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
}


def controller() -> tuple[TrainingController, FakeActuator]:
    actuator = FakeActuator()
    return TrainingController(actuator), actuator


def test_a_new_job_gets_its_service_and_workers_and_a_status() -> None:
    ctl, act = controller()
    result = ctl.reconcile(job(), [], {"n1": NODE}, NOW)
    assert act.services == 1 and act.created == ["tj-worker-0", "tj-worker-1"]
    assert result.status["phase"] == "Pending"
    assert result.status["selector"] == "sparsam.dev/job=tj,sparsam.dev/role=worker"
    assert result.status["observedGeneration"] == 3
    assert "startTime" not in result.status

    running = ctl.reconcile(job(), [pod(0), pod(1)], {"n1": NODE}, NOW)
    assert running.status["phase"] == "Running" and running.status["startTime"]
    assert running.status["workers"] == {"desired": 2, "running": 2}
    assert act.created == ["tj-worker-0", "tj-worker-1"]  # nothing more


def test_a_failed_worker_is_counted_once_even_while_it_lingers_in_the_cache() -> None:
    ctl, act = controller()
    failed = pod(1, phase="Failed", containerStatuses=[{"state": {"terminated": {"exitCode": 1}}}])
    first = ctl.reconcile(job(), [pod(0), failed], {"n1": NODE}, NOW)
    assert first.status["restarts"] == 1 and act.deleted == ["tj-worker-1"]
    # The cache still shows it (the delete has not come back as an event yet).
    second = ctl.reconcile(job(first.status), [pod(0), failed], {"n1": NODE}, NOW)
    assert second.status["restarts"] == 1 and act.deleted == ["tj-worker-1"]


def test_a_worker_whose_pod_vanished_between_passes_is_a_preemption() -> None:
    ctl, act = controller()
    first = ctl.reconcile(job(), [pod(0), pod(1)], {"n1": NODE}, NOW)
    # Evicted by a drain and gone before the next pass saw it terminating.
    second = ctl.reconcile(job(first.status), [pod(0)], {"n1": NODE}, NOW + timedelta(seconds=5))
    assert second.status["preemptions"] == 1
    assert act.created[-1] == "tj-worker-1"
    assert [e.reason for e in second.events] == ["WorkerPreempted"]
    third = ctl.reconcile(job(second.status), [pod(0)], {"n1": NODE}, NOW + timedelta(seconds=9))
    assert third.status["preemptions"] == 1


def test_a_worker_on_a_node_that_is_gone_is_replaced() -> None:
    ctl, act = controller()
    result = ctl.reconcile(job(), [pod(0), pod(1, node="gone")], {"n1": NODE}, NOW)
    assert result.status["preemptions"] == 1
    assert act.deleted == ["tj-worker-1"] and act.created == ["tj-worker-1"]
    (event,) = result.events
    assert event.message == "tj-worker-1: node gone is gone"


def test_a_finished_job_is_left_alone() -> None:
    ctl, act = controller()
    result = ctl.reconcile(job({"phase": "Succeeded"}), [pod(0)], {"n1": NODE}, NOW)
    assert result.status == {} and act.created == [] and act.deleted == []
