"""`handlers.passes.Passes` with the TrainingJob pass, the glue between the watch and the pass:
which events queue a job, what one pass writes and posts, and what it does with an invalid
spec, a refusal, a paused replica and a deleted job. The controller is the real one on a fake
actuator (`test_training_controller`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import kopf
from tests.unit.test_training_controller import NOW, FakeActuator

from sparsam.api.trainingjob import TrainingJob, TrainingJobStatus
from sparsam.controllers.results import Event
from sparsam.controllers.training import TrainingController
from sparsam.handlers.pacing import TokenBucket
from sparsam.handlers.passes import Passes
from sparsam.handlers.trainingjob import training_pass
from sparsam.kube.errors import ApiRefused
from sparsam.kube.podcache import PodViews

KEY = ("ml", "tj")
#: One node with room for the jobs' workers (a cluster that could never hold one would make
#: them Unschedulable, and no worker would be created).
ROOMY = {
    "metadata": {"name": "n1", "labels": {}, "creationTimestamp": "2026-11-22T10:00:00Z"},
    "spec": {},
    "status": {
        "allocatable": {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": "8"},
        "conditions": [],
    },
}
CACHES: dict[str, Any] = {
    "node_index": {"n1": [ROOMY]},
    **{index: {} for index in ("pool_index", "policy_index", "namespace_index")},
}


def body(generation: int = 1, **spec: Any) -> kopf.Body:
    return kopf.Body(
        {
            "metadata": {
                "name": "tj",
                "namespace": "ml",
                "uid": "job-uid",
                "generation": generation,
                "resourceVersion": str(generation),
            },
            "spec": {"image": "t:1", "workers": {"min": 1, "max": 2}, **spec},
            "status": {},
        }
    )


class Setup:
    def __init__(self, active: bool = True, reports: TokenBucket | None = None) -> None:
        self.actuator = FakeActuator()
        self.posted: list[Event] = []
        self.passes = Passes(
            TrainingJob.from_body,
            TrainingJobStatus,
            5.0,
            lambda: NOW,
            lambda: active,
            self.post,
            reports,
        )
        controller = TrainingController(self.actuator)
        self.passes.start(training_pass(controller, PodViews(), CACHES), controller.write_status)

    def post(self, _: kopf.Body, events: Iterable[Event]) -> None:
        self.posted.extend(events)


def run(test: Any, make: Callable[[], Setup] = Setup) -> None:
    async def wrapped() -> None:
        setup = make()
        try:
            await test(setup)
        finally:
            await setup.passes.workers.stop()

    asyncio.run(wrapped())


def test_a_job_is_queued_when_new_or_its_spec_changed_not_for_its_own_status_writes() -> None:
    async def test(setup: Setup) -> None:
        passes = setup.passes
        await passes.workers.stop()  # nothing takes from the queue: its length is what was queued
        passes.seen(KEY, body(1))
        assert len(passes.queue) == 1
        await passes.queue.get()
        passes.queue.done(KEY)
        written = body(1)
        written["status"]["phase"] = "Running"  # our own status write: same generation
        passes.seen(KEY, kopf.Body(written))
        assert len(passes.queue) == 0
        passes.seen(KEY, body(2))  # spec changed (suspend, /scale, ...)
        assert len(passes.queue) == 1

    run(test)


def test_a_spec_no_pass_has_acted_on_goes_before_jobs_listed_again_after_a_restart() -> None:
    async def test(setup: Setup) -> None:
        passes = setup.passes
        await passes.workers.stop()
        handled = body(3)
        handled["status"]["observedGeneration"] = 3  # a pass of an earlier run acted on it
        passes.seen(("ml", "old"), kopf.Body(handled))
        passes.seen(KEY, body(1))  # new: no status yet
        edited = body(4)
        edited["status"]["observedGeneration"] = 3  # edited while the operator was down
        passes.seen(("ml", "edited"), kopf.Body(edited))
        order = [await passes.queue.get() for _ in range(3)]
        assert order == [KEY, ("ml", "edited"), ("ml", "old")]

    run(test)


def test_a_pass_creates_the_workers_writes_what_changed_and_plans_the_next() -> None:
    async def test(setup: Setup) -> None:
        setup.passes.seen(KEY, body())
        assert await setup.passes.work(KEY) == 5.0
        assert setup.actuator.created == ["tj-worker-0", "tj-worker-1"]
        written = setup.actuator.writes[-1]
        assert written["phase"] == "Pending" and written["workers"] == {"desired": 2, "running": 0}
        assert "conditions" in written

    run(test)


def test_an_invalid_spec_says_which_field_and_waits_for_a_change() -> None:
    async def test(setup: Setup) -> None:
        setup.passes.seen(KEY, body(workers={"min": 1, "max": "many"}))
        assert await setup.passes.work(KEY) is None  # not again until the spec changes
        assert setup.actuator.created == []
        (ready,) = setup.actuator.writes[-1]["conditions"]
        assert (ready["type"], ready["status"], ready["reason"]) == (
            "Ready",
            "False",
            "InvalidSpec",
        )
        assert "spec.workers.max" in ready["message"]

    run(test)


def test_a_refused_call_is_an_event_and_a_retry_not_a_crash() -> None:
    async def test(setup: Setup) -> None:
        def refuse(manifest: dict[str, Any]) -> bool:
            raise ApiRefused("creating pod ml/tj-worker-0: 403 exceeded quota")

        setup.actuator.create_pod = refuse  # type: ignore[method-assign]
        setup.passes.seen(KEY, body())
        assert await setup.passes.work(KEY) == 10.0
        assert [(e.type, e.reason) for e in setup.posted] == [("Warning", "ApiRefused")]
        assert "exceeded quota" in setup.posted[0].message
        # The same refusal at the retries: counted, not posted again (an event series).
        for _ in range(3):
            assert await setup.passes.work(KEY) == 10.0
        assert len(setup.posted) == 1

    run(test)


def test_a_paused_replica_and_a_deleted_job_do_nothing() -> None:
    async def test(setup: Setup) -> None:
        setup.passes.seen(KEY, body())
        setup.passes.gone(KEY, "job-uid")
        assert await setup.passes.work(KEY) is None  # deleted: no next pass either
        paused = Setup(active=False)
        paused.passes.seen(KEY, body())
        assert await paused.passes.work(KEY) == 5.0  # asked again later
        await paused.passes.workers.stop()
        assert setup.actuator.created == paused.actuator.created == []

    run(test)


def test_a_report_with_no_token_is_left_to_the_next_pass_and_the_workers_are_not() -> None:
    async def test(setup: Setup) -> None:
        setup.passes.seen(KEY, body())
        assert await setup.passes.work(KEY) == 5.0  # its next pass, as always
        assert setup.actuator.created == ["tj-worker-0", "tj-worker-1"]
        assert setup.actuator.writes == []
        # Nothing later would write this one: it is not paced.
        setup.passes.seen(KEY, body(generation=2, workers={"min": 1, "max": "many"}))
        assert await setup.passes.work(KEY) is None
        assert setup.actuator.writes[-1]["conditions"][0]["reason"] == "InvalidSpec"

    run(test, lambda: Setup(reports=TokenBucket(rate=0.0, burst=0.0)))


def test_a_jobs_first_report_takes_a_token_an_update_would_leave() -> None:
    async def test(setup: Setup) -> None:
        await setup.passes.workers.stop()  # only the passes this test runs
        setup.passes.seen(KEY, body())
        await setup.passes.work(KEY)  # first report: 2 tokens -> 1
        assert [w["phase"] for w in setup.actuator.writes] == ["Pending"]
        reported = body(generation=2)
        reported["status"].update(setup.actuator.writes[-1])
        setup.passes.seen(KEY, kopf.Body(reported))
        await setup.passes.work(KEY)  # an update (generation 2) finds 1 < 1 + reserve 0.5
        assert len(setup.actuator.writes) == 1
        other = ("ml", "new")
        fresh = body()
        fresh["metadata"].update(name="new", uid="new-uid")
        setup.passes.seen(other, kopf.Body(fresh))
        await setup.passes.work(other)  # a first report takes the last token
        assert len(setup.actuator.writes) == 2

    run(test, lambda: Setup(reports=TokenBucket(rate=0.0, burst=2.0)))


def test_the_bucket_gives_a_burst_then_its_rate_and_saves_no_more_than_a_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token a half second
    assert [bucket.take() for _ in range(2)] == [True, False]
    now[0] = 100.0  # idle for long: a burst, not 200
    assert sum(bucket.take() for _ in range(10)) == 3


def test_first_reports_go_before_updates_which_then_have_the_whole_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=8.0, burst=9.0, clock=lambda: now[0])  # updates leave 4
    assert sum(bucket.take(update=True) for _ in range(20)) == 5
    assert sum(bucket.take() for _ in range(20)) == 4  # first reports take the rest
    now[0] = 0.5  # 4 tokens: all for first reports, none for updates
    assert not bucket.take(update=True)
    assert sum(bucket.take() for _ in range(20)) == 4
    now[0] = 10.0  # no first reports waiting: the updates' reserve fills, then they go
    assert sum(bucket.take(update=True) for _ in range(20)) == 5
    taken = 0
    for tick in range(1, 9):  # a second of updates, one every 1/8 s: the whole rate
        now[0] = 10.0 + tick / 8
        taken += bucket.take(update=True)
    assert taken == 8


def test_a_rate_below_one_a_second_still_writes() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=0.5, clock=lambda: now[0])
    assert bucket.take() and not bucket.take()
    now[0] = 2.0
    assert bucket.take(update=True)  # a burst of one: no reserve to keep
