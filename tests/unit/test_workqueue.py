"""The work queue the passes run from (`handlers.passes`): each key queued once, never worked on by
two workers at once, worked on again when added meanwhile, and retried after a failure."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest

from sparsam.handlers.workqueue import Workers, WorkQueue


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=10))


def test_a_key_added_twice_is_worked_on_once() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        for key in ("a", "b", "a", "a"):
            queue.add(key)
        assert len(queue) == 2
        assert [await queue.get(), await queue.get()] == ["a", "b"]

    run(test)


def test_a_key_added_while_worked_on_comes_back_only_when_done() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a")
        assert await queue.get() == "a"
        queue.add("a")  # a change seen during the pass
        queue.add("b")
        assert await queue.get() == "b"  # not "a": a worker has it
        queue.done("b")
        waiting = asyncio.create_task(queue.get())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        queue.done("a")
        assert await waiting == "a"

    run(test)


def test_a_later_add_keeps_the_earliest_time_and_an_add_now_replaces_it() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add_after("a", 0.05)
        queue.add_after("a", 30)  # later than planned: no change
        assert await asyncio.wait_for(queue.get(), 1) == "a"
        queue.done("a")
        queue.add_after("a", 30)
        queue.add("a")  # now, and the 30 s timer is gone
        assert await queue.get() == "a"
        queue.done("a")
        await asyncio.sleep(0.01)
        assert len(queue) == 0

    run(test)


def test_urgent_keys_go_first_in_order_and_a_key_raised_to_urgent_comes_once() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("due-1")
        queue.add("due-2")
        queue.add("urgent-1", urgent=True)
        queue.add("due-2", urgent=True)  # raised: goes with the urgent ones
        queue.add("urgent-1")  # lowering is not a thing: still urgent, still once
        queue.add("urgent-2", urgent=True)
        assert len(queue) == 4
        order = [await queue.get() for _ in range(4)]
        assert order == ["urgent-1", "due-2", "urgent-2", "due-1"]
        assert len(queue) == 0
        for key in order:
            queue.done(key)
        waiting = asyncio.create_task(queue.get())  # the stale entry of due-2 is no key
        await asyncio.sleep(0.01)
        assert not waiting.done()
        waiting.cancel()

    run(test)


def test_a_key_raised_to_urgent_while_worked_on_comes_back_urgent_when_done() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a")
        assert await queue.get() == "a"
        queue.add("b")
        queue.add("a", urgent=True)  # its spec changed during the pass
        queue.done("a")
        assert [await queue.get(), await queue.get()] == ["a", "b"]

    run(test)


def test_a_forgotten_key_is_not_added_later() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add_after("gone", 0.02)
        queue.forget("gone")
        await asyncio.sleep(0.05)
        assert len(queue) == 0

    run(test)


def test_workers_never_run_one_key_twice_at_once_and_requeue_it_when_asked() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        running: set[str] = set()
        passes: list[str] = []
        overlap: list[str] = []

        async def work(key: str) -> float | None:
            if key in running:
                overlap.append(key)
            running.add(key)
            await asyncio.sleep(0.01)
            running.discard(key)
            passes.append(key)
            return 0.01 if passes.count(key) < 3 else None

        workers = Workers(queue, work, count=4, retry=0.01)
        workers.start()
        for _ in range(5):
            queue.add("a")
        queue.add("b")
        while len(passes) < 6:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        await workers.stop()
        assert sorted(passes) == ["a", "a", "a", "b", "b", "b"]
        assert overlap == []

    run(test)


def test_a_failing_pass_is_retried_with_a_growing_delay_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        loop = asyncio.get_running_loop()
        tries: list[float] = []
        others: list[str] = []

        async def work(key: str) -> float | None:
            if key == "bad":
                tries.append(loop.time())
                if len(tries) < 4:
                    raise RuntimeError("boom")
                return None
            others.append(key)
            return None

        workers = Workers(queue, work, count=2, retry=0.02, max_retry=0.08)
        workers.start()
        queue.add("bad")
        queue.add("good")
        while len(tries) < 4:
            await asyncio.sleep(0.01)
        await workers.stop()
        gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
        assert others == ["good"]
        assert gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.08
        assert gaps[2] < 0.5  # capped at max_retry (with room for a slow machine)

    run(test)
    assert "the pass for bad failed (3 in a row); again in 0.08s" in caplog.text
