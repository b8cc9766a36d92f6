"""`decide_training` as a pure function: what a TrainingJob pass observed in, its plan out.

That a lost worker is counted once (whether its pod failed, lingers or vanished), what the
workers should be, the budget, the cadence, the policy's say and the delivery, asserted on the
plan; `test_training_controller.py` asserts how the controller carries a plan out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from tests.unit.test_training_controller import (
    NODE,
    NOW,
    REPORT,
    costpolicy,
    delivering_job,
    job,
    pod,
    priced_job,
)

from sparsam.api.costpolicy import CostPolicy
from sparsam.api.trainingjob import TrainingJob
from sparsam.decisions.cost import Accrual
from sparsam.decisions.delivery import CompressPod
from sparsam.decisions.effective_policy import EffectivePolicy, resolve_policy
from sparsam.decisions.interruption import InterruptionSignals
from sparsam.decisions.training_plan import (
    ObservedPod,
    PodDeletion,
    TrainingObserved,
    TrainingPlan,
    decide_training,
)
from sparsam.kube.observe import node_from_body, worker_from_body

FAILED = {"containerStatuses": [{"state": {"terminated": {"exitCode": 1}}}]}


def observe(
    job_: TrainingJob,
    pods: Iterable[dict[str, Any]] = (),
    nodes: Mapping[str, dict[str, Any]] | None = None,
    **memory: Any,
) -> TrainingObserved:
    """What a pass observes: `pods` on `nodes` (default: n1), and `memory` (handled, ...)."""
    nodes = {"n1": NODE} if nodes is None else nodes
    observed = []
    for body in pods:
        node_name = body["spec"].get("nodeName")
        node = nodes.get(node_name)
        facts = node_from_body(node, (), InterruptionSignals()) if node is not None else None
        gone = bool(node_name) and node is None
        worker = worker_from_body(body, facts, gone_node=gone)
        observed.append(ObservedPod(worker, body["metadata"]["uid"], orphan=gone))
    accrual = None if job_.status.finished else Accrual(accrued_up_to=NOW)
    return TrainingObserved(job_, tuple(observed), accrual=accrual, **memory)


def decide(
    observed: TrainingObserved, policy: CostPolicy | None = None, now: datetime = NOW
) -> TrainingPlan:
    return decide_training(observed, resolve_policy(policy), now)


def handled_after(plan: TrainingPlan) -> frozenset[str]:
    """What the controller remembers once it carried `plan` out."""
    return (plan.handled or frozenset()) | {d.uid for d in plan.delete}


def deleted(plan: TrainingPlan) -> list[str]:
    return [d.name for d in plan.delete]


def reasons(plan: TrainingPlan) -> list[str]:
    return [reason for _, reason, _ in plan.events]


def test_a_new_job_plans_its_workers_and_a_status() -> None:
    plan = decide(observe(job()))
    assert plan.create == (0, 1) and plan.delete == () and plan.counts is None
    assert plan.status["phase"] == "Pending" and "startTime" not in plan.status
    assert plan.status["selector"] == "sparsam.dev/job=tj,sparsam.dev/role=worker"
    assert plan.awaited == {}
    running = decide(observe(job(), [pod(0), pod(1)]))
    assert running.status["phase"] == "Running" and running.status["startTime"]
    assert running.status["workers"] == {"desired": 2, "running": 2} and running.create == ()


def test_start_time_is_the_first_container_start_not_the_pass_that_reports_it() -> None:
    """A report left to a later pass (paced in a burst) still says when the job started."""

    def running(index: int, since: datetime) -> dict[str, Any]:
        state = {"running": {"startedAt": since.strftime("%Y-%m-%dT%H:%M:%SZ")}}
        return pod(index, containerStatuses=[{"name": "trainer", "state": state}])

    pods = [running(0, NOW - timedelta(seconds=30)), running(1, NOW - timedelta(seconds=40))]
    assert decide(observe(job(), pods)).status["startTime"] == "2026-11-22T11:59:20Z"


def test_a_suspend_clears_start_time_so_the_deadline_counts_from_the_resume() -> None:
    suspended = job(
        {"phase": "Running", "startTime": "2026-11-22T11:59:00Z"},
        runPolicy={"suspend": True, "activeDeadlineSeconds": 60},
    )
    plan = decide(observe(suspended, [pod(0), pod(1)]))
    assert plan.status["phase"] == "Suspended"
    assert plan.status["startTime"] is None  # the merge patch removes the field
    assert deleted(plan) == ["tj-worker-0", "tj-worker-1"]


def test_workers_still_awaited_in_the_cache_are_not_created_again() -> None:
    created = {"tj-worker-0": NOW, "tj-worker-1": NOW}
    plan = decide(observe(job(), created=created), now=NOW + timedelta(seconds=55))
    assert plan.create == () and plan.awaited == created
    # Past CREATE_PATIENCE they are taken for lost; one the cache shows is no longer awaited.
    later = decide(observe(job(), [pod(0)], created=created), now=NOW + timedelta(seconds=61))
    assert later.create == (1,) and later.awaited == {}


def test_a_failed_worker_is_counted_once_even_while_it_lingers_in_the_cache() -> None:
    failed = pod(1, phase="Failed", **FAILED)
    first = decide(observe(job(), [pod(0), failed]))
    assert first.status["restarts"] == 1 and deleted(first) == ["tj-worker-1"]
    # The cache still shows it (the delete has not come back as an event yet).
    again = observe(job(first.status), [pod(0), failed], handled=handled_after(first))
    second = decide(again)
    assert second.status["restarts"] == 1 and second.delete == () and second.counts is None


def test_a_count_is_planned_with_the_pods_it_counts() -> None:
    plan = decide(observe(job(), [pod(0), pod(1, phase="Failed", **FAILED)]))
    # The controller writes these before it deletes anything.
    assert plan.counts == {
        "preemptions": 0,
        "restarts": 1,
        "countedPods": ["pod-1"],
        "workerPods": [{"name": "tj-worker-0", "uid": "pod-0"}],
    }
    assert plan.delete == (PodDeletion("tj-worker-1", "pod-1"),)
    assert plan.status["countedPods"] == ["pod-1"] and plan.restarted == 1


def test_a_restarted_operator_deletes_a_counted_pod_without_counting_it_again() -> None:
    # The last operator wrote the count and died before the delete: a new controller (empty
    # memory) finds the failed pod still there, and its uid in status.countedPods.
    failed = pod(1, phase="Failed", **FAILED)
    before = {"restarts": 1, "countedPods": ["pod-1"]}
    plan = decide(observe(job(before), [pod(0), failed]))
    assert plan.status["restarts"] == 1 and plan.counts is None
    assert deleted(plan) == ["tj-worker-1"] and reasons(plan) == []
    # Once the pod is gone its uid goes too (None removes the field from status), and from
    # the controller's memory.
    gone = decide(observe(job({**before, **plan.status}), [pod(0)], handled=handled_after(plan)))
    assert gone.status["countedPods"] is None and gone.status["restarts"] == 1
    last = observe(
        job({**before, **gone.status, "countedPods": None}), [pod(0)], handled=gone.handled
    )
    assert decide(last).handled == frozenset()


def test_a_worker_whose_pod_vanished_between_passes_is_a_preemption() -> None:
    first = decide(observe(job(), [pod(0), pod(1)]))
    # Evicted by a drain and gone before the next pass saw it terminating.
    second = decide(observe(job(first.status), [pod(0)]), now=NOW + timedelta(seconds=5))
    assert second.status["preemptions"] == 1 and second.preempted == 1
    # Counted in the same write as the workers left running, and replaced in this pass.
    assert second.counts is not None and second.counts["preemptions"] == 1
    assert second.counts["workerPods"] == [{"name": "tj-worker-0", "uid": "pod-0"}]
    assert second.create == (1,) and reasons(second) == ["WorkerPreempted"]
    third = observe(job(second.status), [pod(0)], handled=handled_after(second))
    assert decide(third, now=NOW + timedelta(seconds=9)).status["preemptions"] == 1


def test_a_worker_that_lost_its_rendezvous_store_with_worker_0_is_not_counted() -> None:
    # Worker 0 was lost and counted in an earlier pass; its replacement is new. Worker 1's
    # agent then died of the store's loss: its termination message is the end of its log.
    ended = {
        "exitCode": 1,
        "reason": "Error",
        "startedAt": "2026-11-22T11:00:00Z",
        "message": "...\ntorch.distributed.elastic.rendezvous.api.RendezvousConnectionError: "
        "The connection to the C10d store has failed. See inner exception for details.\n",
    }
    survivor = pod(1, phase="Failed", containerStatuses=[{"state": {"terminated": ended}}])
    replacement = pod(0, phase="Pending")
    replacement["metadata"]["creationTimestamp"] = "2026-11-22T11:59:58Z"
    plan = decide(observe(job({"preemptions": 1}), [replacement, survivor]))
    assert (plan.status["preemptions"], plan.status["restarts"]) == (1, 0)
    assert reasons(plan) == ["RendezvousStoreLost"]
    # Held, not replaced, until a worker 0 runs: a replacement would only fail the same way.
    assert plan.delete == () and plan.create == ()
    counted = plan.status["countedPods"]
    assert counted == [survivor["metadata"]["uid"]]
    replacement["status"]["phase"] = "Running"
    held = job({"preemptions": 1, "countedPods": counted})
    again = decide(observe(held, [replacement, survivor]))
    assert deleted(again) == ["tj-worker-1"] and again.events == ()  # counted once only
    assert (again.status["preemptions"], again.status["restarts"]) == (1, 0)
    # The same error while the worker 0 it joined runs on is the program's failure.
    replacement["metadata"]["creationTimestamp"] = "2026-11-22T10:59:00Z"
    failure = decide(observe(job({"preemptions": 1}), [replacement, survivor]))
    assert (failure.status["preemptions"], failure.status["restarts"]) == (1, 1)


def test_a_worker_that_vanished_while_the_operator_was_down_is_a_preemption() -> None:
    # status.workerPods is what the last pass of the previous operator left running.
    before = {
        "workerPods": [
            {"name": "tj-worker-0", "uid": "pod-0"},
            {"name": "tj-worker-1", "uid": "pod-1"},
        ]
    }
    plan = decide(observe(job(before), [pod(0)]))  # a new process: nothing in memory
    assert plan.status["preemptions"] == 1
    assert plan.delete == () and plan.create == (1,)
    assert plan.status["workerPods"] == [{"name": "tj-worker-0", "uid": "pod-0"}]
    assert plan.handled == {"pod-1"}  # counted: never again


def test_a_lost_worker_whose_name_a_new_pod_took_is_counted_and_the_new_pod_kept() -> None:
    # The pass that replaced tj-worker-1 died before its status write: the new pod (pod-9)
    # is there, and status still lists the old one.
    before = {
        "workerPods": [
            {"name": "tj-worker-0", "uid": "pod-0"},
            {"name": "tj-worker-1", "uid": "pod-1"},
        ]
    }
    replacement = pod(1)
    replacement["metadata"]["uid"] = "pod-9"
    plan = decide(observe(job(before), [pod(0), replacement]))
    assert plan.status["preemptions"] == 1
    assert plan.delete == () and plan.create == ()
    assert [p["uid"] for p in plan.status["workerPods"]] == ["pod-0", "pod-9"]


def test_a_worker_whose_node_is_gone_is_force_deleted_and_replaced() -> None:
    plan = decide(observe(job(), [pod(0), pod(1, node="gone")]))
    assert plan.status["preemptions"] == 1
    # No kubelet will confirm its end: forced, so its replacement can take its name now.
    assert plan.delete == (PodDeletion("tj-worker-1", "pod-1", force=True),)
    assert plan.create == (1,)
    assert plan.events == (("Warning", "WorkerPreempted", "tj-worker-1: node gone is gone"),)


def recorded(job_: TrainingJob, outcome: str) -> TrainingJob:
    """`job_` with the outcome the operator recorded on it (`sparsam.dev/outcome`)."""
    annotations = {"sparsam.dev/outcome": outcome}
    return replace(job_, metadata=replace(job_.metadata, annotations=annotations))


def test_a_finished_job_is_left_alone() -> None:
    done = recorded(job({"phase": "Succeeded"}), "Succeeded 2026-11-22T11:59:30Z")
    plan = decide(observe(done, [pod(0)]))
    assert plan == TrainingPlan({})


def test_a_finished_job_is_deleted_after_its_ttl() -> None:
    done = TrainingJob.from_body(
        {
            "metadata": {
                "name": "tj",
                "namespace": "ml",
                "uid": "u",
                "generation": 1,
                "annotations": {"sparsam.dev/outcome": "Succeeded 2026-11-22T11:59:30Z"},
            },
            "spec": {"image": "t:1", "runPolicy": {"ttlSecondsAfterFinished": 60}},
            "status": {"phase": "Succeeded", "completionTime": "2026-11-22T11:59:30Z"},
        }
    )
    assert not decide(observe(done)).delete_job  # 30 s after it finished
    plan = decide(observe(done), now=NOW + timedelta(seconds=30))
    assert plan.delete_job and reasons(plan) == ["Expired"]


@pytest.mark.parametrize("forged", ["Succeeded", "Failed", "Compressing", "Deploying"])
def test_a_phase_someone_else_wrote_in_status_is_not_believed(forged: str) -> None:
    # Status is anyone's to write who may write the status subresource; the operator's
    # own record of the end is its annotation. A running job told it finished keeps running,
    # is not deleted by its TTL, starts no compression, and its phase is set right again.
    forged_status = {
        "phase": forged,
        "completionTime": "2026-11-22T10:00:00Z",
        "startTime": "2026-11-22T09:00:00Z",
    }
    running = TrainingJob.from_body(
        {
            "metadata": {"name": "tj", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": {
                "image": "t:1",
                "workers": {"min": 1, "max": 1},
                "runPolicy": {"ttlSecondsAfterFinished": 1},
                "compression": {"quantization": {"mode": "dynamic"}},
                "checkpoint": {"volumeClaim": "ckpt"},
            },
            "status": forged_status,
        }
    )
    plan = decide(observe(running, [pod(0)]), now=NOW + timedelta(hours=1))
    assert not plan.delete_job and not plan.create_compress and plan.record is None
    assert plan.status["phase"] == "Running" and not plan.delete


def test_the_end_the_operator_observed_is_recorded_and_restores_a_rewritten_phase() -> None:
    done = decide(observe(job(), [pod(0, phase="Succeeded")]))
    assert done.status["phase"] == "Succeeded" and done.record is not None
    assert done.record.to_annotation() == "Succeeded 2026-11-22T12:00:00Z"
    rewritten = recorded(job({"phase": "Running"}), done.record.to_annotation())
    plan = decide(observe(rewritten), now=NOW + timedelta(seconds=5))
    assert plan.status == {"phase": "Succeeded", "completionTime": "2026-11-22T12:00:00Z"}


def test_cost_is_reported_at_most_every_30s_and_with_every_change_of_phase() -> None:
    spent = Accrual(accrued_up_to=NOW, gpu_seconds=100.0, cost=0.1, on_demand_equivalent=None)
    first = decide(replace(observe(priced_job(), [pod(0)]), accrual=spent))
    assert first.status["cost"] == {"accrued": 0.1, "gpuSeconds": 100.0} and first.cost_written
    more = replace(spent, cost=0.2)
    recent = observe(priced_job({"phase": "Running"}), [pod(0)], cost_written=NOW)
    later = decide(replace(recent, accrual=more), now=NOW + timedelta(seconds=10))
    assert "cost" not in later.status and not later.cost_written  # changed, written 10 s ago
    stopped = observe(
        priced_job({"phase": "Running"}, runPolicy={"suspend": True}), [pod(0)], cost_written=NOW
    )
    suspended = decide(replace(stopped, accrual=more), now=NOW + timedelta(seconds=10))
    assert suspended.status["cost"]["accrued"] == 0.2  # a stopped job shows what it cost


@pytest.mark.parametrize(
    ("on_exceeded", "phase", "delete"),
    [
        ("Alert", "Running", []),
        ("Suspend", "Suspended", ["tj-worker-0"]),
        ("Fail", "Failed", ["tj-worker-0"]),
    ],
    ids=["alert", "suspend", "fail"],
)
def test_a_spent_budget(on_exceeded: str, phase: str, delete: list[str]) -> None:
    job_ = priced_job(budget={"maxCost": 0.05, "onExceeded": on_exceeded})
    spent = Accrual(accrued_up_to=NOW, gpu_seconds=60.0, cost=0.06)
    plan = decide(replace(observe(job_, [pod(0)]), accrual=spent))
    assert plan.status["phase"] == phase and deleted(plan) == delete
    assert plan.events[0][1] == "BudgetExceeded" and plan.alerted
    assert "0.06 of spec.budget.maxCost 0.05" in plan.events[0][2]
    if on_exceeded == "Alert":  # posted once, and the job keeps running
        again = decide(replace(observe(job_, [pod(0)], alerted=True), accrual=spent))
        assert reasons(again) == [] and again.alerted
    # Under the budget again (a raised maxCost): the next spend alerts again.
    under = replace(spent, cost=0.01)
    assert not decide(replace(observe(job_, [pod(0)], alerted=True), accrual=under)).alerted


@pytest.mark.parametrize(
    ("interval", "policy", "seconds", "mode"),
    [
        # Prior 0.01 preemptions per spot node-hour x 2 workers: MTBF 50 h; Young/Daly with
        # the default C = 60 s gives 77 min, clamped to the 1 h maximum.
        ("auto", None, 3600, "Auto"),
        # maxLostWorkFraction 0.01: tau <= 2 * (0.01 * 180000 s - 60 s) = 3480 s.
        ("auto", costpolicy(checkpoint={"maxLostWorkFraction": 0.01}), 3480, "Auto"),
        ("10m", None, 600, "Fixed"),
    ],
    ids=["auto-prior", "auto-bounded-by-policy", "fixed"],
)
def test_checkpoint_cadence_goes_to_status_and_to_new_workers(
    interval: str, policy: CostPolicy | None, seconds: int, mode: str
) -> None:
    job_ = job(checkpoint={"volumeClaim": "ckpt", "interval": interval})
    plan = decide(observe(job_), policy)
    cadence = plan.status["checkpointInterval"]
    assert (cadence["seconds"], cadence["mode"]) == (seconds, mode)
    assert "C=60s (default, not yet measured)" in cadence["message"]
    assert plan.checkpoint_interval == f"{seconds}s"


def test_the_measured_checkpoint_write_time_sets_the_cadence_and_status() -> None:
    job_ = job(checkpoint={"volumeClaim": "ckpt", "interval": "auto"})
    at = NOW - timedelta(seconds=30)
    measured = observe(job_, write_seconds=12.0, checkpoint_step=400, checkpoint_time=at)
    plan = decide(measured)
    cadence = plan.status["checkpointInterval"]
    assert cadence["writeSeconds"] == 12.0 and "C=12s," in cadence["message"]
    default = decide(observe(job_))
    assert cadence["seconds"] < default.status["checkpointInterval"]["seconds"]
    assert plan.status["lastCheckpoint"] == {"step": 400, "time": "2026-11-22T11:59:30Z"}
    assert "lastCheckpoint" not in default.status


def test_the_policys_allowed_gpu_types_and_accuracy_cap_go_into_the_plan() -> None:
    policy = costpolicy(allowedGPUTypes=["NVIDIA-L4"], compression={"maxAccuracyDrop": 0.005})
    assert decide(observe(job()), policy).allowed_gpu_types == ("NVIDIA-L4",)
    done = decide(observe(delivering_job(), [pod(0, phase="Succeeded")]), policy)
    assert done.create_compress and done.max_accuracy_drop == 0.005


def test_a_policy_requiring_compression_keeps_a_job_without_it_from_starting() -> None:
    policy = costpolicy(compression={"required": True})
    held = decide(observe(job()), policy)
    assert held.create == () and held.status["phase"] == "Pending"
    (ready,) = held.status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "CompressionRequired")
    assert "CostPolicy team requires spec.compression" in ready["message"]
    # A job that sets spec.compression starts; one that runs already goes on.
    assert decide(observe(delivering_job()), policy).create == (0,)
    started = {"startTime": "2026-11-22T11:00:00Z", "phase": "Running"}
    running = decide(observe(job(started), [pod(0), pod(1)]), policy)
    assert running.status["phase"] == "Running"


def test_a_succeeded_job_plans_its_compression_then_its_deployment() -> None:
    done = decide(observe(delivering_job(), [pod(0, phase="Succeeded")]))
    assert done.status["phase"] == "Compressing" and "completionTime" not in done.status
    assert done.create_compress and done.deploy_uri is None and done.delivery
    assert done.record is not None and done.record.stage == "Trained"
    compressing = delivering_job(
        done.status, {"sparsam.dev/outcome": "Trained 2026-11-22T12:00:00Z"}
    )
    waiting = decide(replace(observe(compressing), compress=CompressPod("Running")))
    assert waiting.status["phase"] == "Compressing" and not waiting.create_compress
    ended = decide(
        replace(observe(compressing), compress=CompressPod("Succeeded", 0, REPORT)),
    )
    assert ended.status["phase"] == "Succeeded" and ended.status["completionTime"]
    assert ended.status["compression"]["sizeBytes"] == {"before": 100, "after": 25}
    uri = "pvc://ckpt/tj/compressed/model"
    assert ended.status["model"] == {"uri": uri} and ended.deploy_uri == uri
    assert reasons(ended) == ["Deployed"]
    assert ended.record is not None and ended.record.stage == "Succeeded"


@pytest.mark.parametrize(
    ("code", "phase", "condition", "reason"),
    [
        pytest.param(76, "Succeeded", ("CompressionRejected", "True"), None, id="rejected"),
        pytest.param(1, "Failed", None, "CompressionFailed", id="failed"),
    ],
)
def test_a_rejected_or_failed_compression_deploys_nothing(
    code: int, phase: str, condition: tuple[str, str] | None, reason: str | None
) -> None:
    rejected = REPORT.replace('"accepted":true', '"accepted":false')
    compressing = delivering_job(
        {"phase": "Compressing", "conditions": []},
        {"sparsam.dev/outcome": "Trained 2026-11-22T11:00:00Z"},
    )
    ended_pod = CompressPod("Succeeded" if code == 0 else "Failed", code, rejected)
    ended = decide(replace(observe(compressing), compress=ended_pod))
    assert ended.status["phase"] == phase and ended.deploy_uri is None
    found = {c["type"]: c for c in ended.status["conditions"]}
    if condition is not None:
        assert (found[condition[0]]["status"]) == condition[1]
        assert "accuracy 0.9 -> 0.89" in found[condition[0]]["message"]
    if reason is not None:
        assert found["Ready"]["reason"] == reason


@pytest.mark.parametrize(
    ("spot", "policy", "expected"),
    [
        ("Require", costpolicy(spot={"default": "Never"}), ("Require", "Spec")),
        (None, None, ("Prefer", "Default")),
        (None, costpolicy(), ("Prefer", "CostPolicy")),
        (None, costpolicy(spot={"default": "Never"}), ("Never", "CostPolicy")),
    ],
    ids=["own-wins", "no-policy", "policy-without-a-default", "policy-default"],
)
def test_where_the_spot_policy_comes_from(
    spot: str | None, policy: CostPolicy | None, expected: tuple[str, str]
) -> None:
    job_ = job(capacity={"spot": spot}) if spot else job()
    plan = decide(observe(job_), policy)
    assert (plan.status["spot"]["policy"], plan.status["spot"]["source"]) == expected
    assert plan.spot == expected[0]


def test_the_decision_takes_the_effective_policy_not_the_costpolicy() -> None:
    stop = resolve_policy(costpolicy(compression={"required": True}))
    assert isinstance(stop, EffectivePolicy)
    assert decide_training(observe(job()), stop, NOW).create == ()
