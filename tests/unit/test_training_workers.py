"""The TrainingJob worker decision: how stopped workers count, when the job waits, fails,
succeeds or suspends, and which workers to create and delete."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sparsam.api.trainingjob import TrainingJob
from sparsam.decisions.training import (
    AGENT_SIGNALLED,
    CREATE_PATIENCE,
    Worker,
    awaited,
    decide_workers,
    outcome,
    start_time,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def job(status: dict[str, Any] | None = None, **spec: Any) -> TrainingJob:
    return TrainingJob.from_body(
        {
            "metadata": {"name": "tj", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": {"image": "trainer:1", "workers": {"min": 2, "max": 3}, **spec},
            "status": status or {},
        }
    )


def worker(index: int, phase: str = "Running", **kw: Any) -> Worker:
    return Worker(index, f"tj-worker-{index}", phase, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        (worker(0), "active"),
        (worker(0, "Pending"), "active"),
        (worker(0, "Succeeded", exit_code=0), "succeeded"),
        (worker(0, "Failed", exit_code=75), "preempted"),
        (worker(0, "Failed", exit_code=137, reason="Error"), "preempted"),
        (worker(0, "Failed", exit_code=137, reason="OOMKilled"), "failed"),
        # torchrun's agent on SIGTERM (its pod deleted): exit 1, the signal in its last line.
        (
            worker(
                0, "Failed", exit_code=1, message=f"{AGENT_SIGNALLED}: Process 1 got signal: 15"
            ),
            "preempted",
        ),
        (worker(0, "Failed", exit_code=1, message="ValueError: bad input"), "failed"),
        (worker(0, "Failed", exit_code=1), "failed"),
        (worker(0, "Failed", exit_code=2), "failed"),
        (worker(0, "Failed", reason="Evicted"), "preempted"),
        (worker(0, node_lost="node deleted"), "preempted"),
        (worker(0, "Pending", node_lost="NotReady"), "preempted"),
    ],
    ids=[
        "running",
        "pending",
        "exit-0",
        "resumable-exit-75",
        "sigkill-from-outside",
        "oom-kill",
        "torchrun-sigterm",
        "error-in-log",
        "program-error",
        "usage-error",
        "evicted",
        "node-gone",
        "node-not-ready",
    ],
)
def test_outcome(observed: Worker, expected: str) -> None:
    assert outcome(observed) == expected


def test_a_new_job_creates_max_workers_and_waits_for_min() -> None:
    decision = decide_workers(job(), [], NOW)
    assert decision.create == (0, 1, 2)
    assert decision.phase == "Pending"
    assert decision.ready[:2] == ("False", "WaitingForWorkers")
    assert "0 of the 2 workers" in decision.ready[2]


def test_scale_subresource_target_is_honoured() -> None:
    decision = decide_workers(
        job(workers={"min": 1, "max": 4, "replicas": 2}),
        [worker(0), worker(1), worker(2), worker(3, "Pending")],
        NOW,
    )
    assert decision.desired == 2
    assert decision.delete == ("tj-worker-2", "tj-worker-3")
    assert decision.create == ()


def test_a_preempted_worker_is_replaced_and_the_job_keeps_running_on_min() -> None:
    decision = decide_workers(
        job({"preemptions": 4, "restarts": 1}),
        [worker(0), worker(1), worker(2, node_lost="interruption taint karpenter.sh/disrupted")],
        NOW,
    )
    assert decision.phase == "Running"
    assert decision.delete == ("tj-worker-2",)
    assert decision.create == (2,)
    assert (decision.preemptions, decision.restarts) == (5, 1)
    assert decision.events == (
        ("Warning", "WorkerPreempted", "tj-worker-2: interruption taint karpenter.sh/disrupted"),
    )


def test_below_min_the_job_waits_instead_of_failing() -> None:
    decision = decide_workers(
        job(), [worker(0), worker(1, "Failed", exit_code=75), worker(2, "Pending")], NOW
    )
    assert decision.phase == "Pending" and not decision.finished
    assert decision.running == 1
    assert decision.ready[1] == "WaitingForWorkers"
    assert decision.create == (1,)


def test_workers_on_their_way_out_are_not_counted_twice() -> None:
    decision = decide_workers(
        job({"preemptions": 1, "restarts": 1}),
        [
            worker(0),
            worker(1),
            worker(2, "Failed", exit_code=1, deleting=True),
            worker(3, "Failed", exit_code=75, deleting=True),
        ],
        NOW,
    )
    assert (decision.preemptions, decision.restarts) == (1, 1)
    assert decision.delete == ()
    # Not counted yet, so not replaced yet: their names are free once they are gone.
    assert decision.create == ()


def test_an_evicted_worker_is_counted_and_replaced_in_the_pass_that_finds_it_gone() -> None:
    evicted = decide_workers(job(), [worker(0), worker(1), worker(2, deleting=True)], NOW)
    assert (evicted.preemptions, evicted.counted, evicted.create, evicted.delete) == (0, (), (), ())

    lost = "pod tj-worker-2 was deleted (evicted, or its node drained)"
    gone = worker(2, "Failed", node_lost=lost, gone=True)
    replaced = decide_workers(job(), [worker(0), worker(1), gone], NOW)
    assert (replaced.preemptions, replaced.create) == (1, (2,))

    # One counted before (status.countedPods) but still terminating does not hold its name.
    counted = worker(2, deleting=True, counted=True)
    again = decide_workers(job({"preemptions": 1}), [worker(0), worker(1), counted], NOW)
    assert again.create == (2,)


def test_workers_already_counted_are_deleted_but_not_counted_again_and_gone_ones_counted() -> None:
    decision = decide_workers(
        job({"preemptions": 1, "restarts": 1}),
        [
            worker(0),
            worker(1, "Failed", exit_code=1, counted=True),
            worker(2, node_lost="node n2 is gone", counted=True),
            worker(3, "Failed", exit_code=1),
            worker(4, node_lost="pod tj-worker-4 was deleted", gone=True),
        ],
        NOW,
    )
    assert (decision.preemptions, decision.restarts) == (2, 2)
    # A gone worker is counted, but there is no pod to delete or to record.
    assert decision.delete == ("tj-worker-1", "tj-worker-2", "tj-worker-3")
    assert decision.counted == ("tj-worker-3",)
    assert [reason for _, reason, _ in decision.events] == ["WorkerFailed", "WorkerPreempted"]


@pytest.mark.parametrize(
    ("restarts", "phase"), [(2, "Running"), (3, "Failed")], ids=["within", "beyond"]
)
def test_program_failures_count_against_the_backoff_limit(restarts: int, phase: str) -> None:
    decision = decide_workers(
        job({"restarts": restarts - 1}, runPolicy={"backoffLimit": 2}),
        [worker(0), worker(1), worker(2, "Failed", exit_code=1)],
        NOW,
    )
    assert decision.restarts == restarts
    assert decision.phase == phase
    if phase == "Failed":
        assert decision.finished
        assert decision.ready[1] == "BackoffLimitExceeded"
        assert set(decision.delete) == {"tj-worker-0", "tj-worker-1", "tj-worker-2"}


def test_preemptions_never_fail_the_job() -> None:
    many = [worker(i, "Failed", exit_code=75) for i in range(3)]
    decision = decide_workers(job({"preemptions": 100}, runPolicy={"backoffLimit": 0}), many, NOW)
    assert decision.phase == "Pending" and decision.preemptions == 103


STARTED = NOW - timedelta(hours=1)
#: What torchrun's agent leaves as a worker's termination message when worker 0 is gone.
STORE_ERROR = (
    "torch.distributed.elastic.rendezvous.api.RendezvousConnectionError: "
    "The connection to the C10d store has failed. See inner exception for details."
)


def survivor(message: str = STORE_ERROR, started: datetime | None = STARTED) -> Worker:
    return worker(1, "Failed", exit_code=1, reason="Error", message=message, started=started)


def first(phase: str = "Running", created: datetime = STARTED, **kw: Any) -> Worker:
    return worker(0, phase, created=created, **kw)


@pytest.mark.parametrize(
    ("others", "failed", "failure"),
    [
        ([], survivor(), False),
        ([first(node_lost="node n1 is gone")], survivor(), False),
        ([first("Failed", exit_code=1)], survivor(), False),
        ([first("Pending", created=NOW)], survivor(), False),
        ([first("Pending")], survivor(), False),
        ([first(deleting=True)], survivor(), False),
        ([first("Running", created=NOW)], survivor(), False),
        ([first()], survivor(), True),
        ([first(created=STARTED - timedelta(seconds=30))], survivor(), True),
        ([], survivor(message="ValueError: bad learning rate"), True),
        ([], survivor(started=None), True),
    ],
    ids=[
        "worker-0-gone",
        "worker-0-on-a-lost-node",
        "worker-0-failed",
        "worker-0-replaced-since",
        "worker-0-waiting-for-capacity",
        "worker-0-on-its-way-out",
        "worker-0-replaced-and-running",
        "worker-0-it-joined-still-runs",
        "worker-0-older-still-runs",
        "another-error",
        "no-start-time",
    ],
)
def test_a_worker_with_no_rendezvous_store_for_want_of_worker_0_is_not_counted(
    others: list[Worker], failed: Worker, failure: bool
) -> None:
    status = {"preemptions": 4, "restarts": 0}
    decision = decide_workers(job(status, runPolicy={"backoffLimit": 0}), [*others, failed], NOW)
    theirs = [(r, m) for _, r, m in decision.events if m.startswith("tj-worker-1:")]
    assert "tj-worker-1" in decision.counted
    if failure:
        assert [r for r, _ in theirs] == ["WorkerFailed"]
        assert decision.phase == "Failed" and decision.restarts >= 1
        return
    message = "tj-worker-1: no rendezvous store without worker 0 (exit code 1, Error); not counted"
    assert theirs == [("RendezvousStoreLost", message)]
    # Worker 0's own end counts as what it was; worker 1's adds nothing.
    assert decision.preemptions == 4 + sum(outcome(o) == "preempted" for o in others)
    assert decision.restarts == sum(outcome(o) == "failed" for o in others)
    if decision.phase == "Failed":
        return  # worker 0's own failure ended the job: every pod goes
    # Replaced once a worker 0 runs (its store is up again); until then its pod stays.
    store_up = any(
        o.phase == "Running" and outcome(o) == "active" and not o.deleting for o in others
    )
    assert (1 in decision.create) is store_up
    assert ("tj-worker-1" in decision.delete) is store_up


def test_a_worker_held_for_want_of_the_store_is_replaced_once_a_worker_0_runs() -> None:
    held = replace(survivor(), counted=True)  # counted at an earlier pass
    two = job(workers={"min": 1, "max": 2})
    waiting = decide_workers(two, [first("Pending", created=NOW), held], NOW)
    assert waiting.create == () and waiting.delete == () and waiting.events == ()
    assert waiting.phase == "Pending"
    running = decide_workers(two, [first("Running", created=NOW), held], NOW)
    assert running.create == (1,) and running.delete == ("tj-worker-1",)
    assert running.events == () and running.restarts == 0
    # Scaled down below it meanwhile: it goes at once, with nothing to replace.
    one = job(workers={"min": 1, "max": 1})
    assert decide_workers(one, [first("Pending", created=NOW), held], NOW).delete == (
        "tj-worker-1",
    )


def test_the_first_success_finishes_the_job() -> None:
    decision = decide_workers(
        job(), [worker(0, "Succeeded", exit_code=0), worker(1), worker(2)], NOW
    )
    assert decision.phase == "Succeeded" and decision.finished
    assert decision.create == () and decision.delete == ()


def test_active_deadline() -> None:
    started = (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    decision = decide_workers(
        job({"startTime": started}, runPolicy={"activeDeadlineSeconds": 3600}),
        [worker(0), worker(1)],
        NOW,
    )
    assert decision.phase == "Failed" and decision.ready[1] == "DeadlineExceeded"
    assert decision.delete == ("tj-worker-0", "tj-worker-1")


def test_a_job_started_when_its_first_worker_container_did() -> None:
    early, late = NOW - timedelta(seconds=40), NOW - timedelta(seconds=5)
    assert start_time([worker(0, started=late), worker(1, started=early), worker(2)], NOW) == early
    assert start_time([worker(0, "Pending"), worker(1, "Pending")], NOW) == NOW
    # A worker of the run before a suspend, still terminating, is not this run's start.
    assert (
        start_time([worker(0, started=early, deleting=True), worker(1, started=late)], NOW) == late
    )
    assert start_time([], NOW) == NOW


def test_suspend_removes_the_workers_and_is_not_final() -> None:
    decision = decide_workers(job(runPolicy={"suspend": True}), [worker(0), worker(1)], NOW)
    assert decision.phase == "Suspended" and not decision.finished
    assert decision.delete == ("tj-worker-0", "tj-worker-1") and decision.create == ()
    resumed = decide_workers(job(), [], NOW)
    assert resumed.create == (0, 1, 2)


def test_a_created_worker_is_awaited_until_the_cache_shows_it_or_patience_runs_out() -> None:
    created = {"tj-worker-0": NOW, "tj-worker-1": NOW, "tj-worker-2": NOW - CREATE_PATIENCE}
    assert awaited(created, {"tj-worker-0"}, NOW) == {"tj-worker-1": NOW}
    assert awaited(created, set(), NOW + CREATE_PATIENCE) == {}
