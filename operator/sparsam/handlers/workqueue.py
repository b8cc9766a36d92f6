"""A work queue of object keys and the workers that drain it, as controller-runtime has them.

Why not one Kopf timer per object: with 500 TrainingJobs, Kopf's timer machinery was a fifth
of the operator's CPU (a py-spy profile of `benchmarks/operator_scale.py`), and a timer puts a
finalizer on every object, a PATCH per new object and a deletion that waits for the operator.
Here a key waits in the queue at most once however often it is added, a key being worked on
is never worked on by two workers at once (it is queued again if added meanwhile), and each
pass says when its object wants the next one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

log = logging.getLogger(__name__)


class WorkQueue(Generic[K]):
    """Keys to work on, each queued at most once. Event-loop only (no locks).

    Two priorities, as controller-runtime's priority queue has them: a key `add`ed `urgent`
    (an object whose spec nobody has acted on yet) is handed out before any key that is only
    due (its pass came round again, or a retry). In a burst of new TrainingJobs the periodic
    passes of the jobs created a few seconds earlier would otherwise take the workers first."""

    URGENT: Final = 0
    DUE: Final = 1

    def __init__(self) -> None:
        # One getter woken per entry put (an Event would wake every idle worker each time).
        # An entry whose key was taken, or raised to urgent, since it was put is stale: its
        # priority no longer matches `_queued`'s, and `get` skips it.
        self._ready: asyncio.PriorityQueue[tuple[int, int, K]] = asyncio.PriorityQueue()
        self._order = itertools.count()  # first in, first out within a priority
        self._queued: dict[K, int] = {}  # key -> its priority
        self._working: set[K] = set()
        self._later: dict[K, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: K, urgent: bool = False) -> None:
        """Work on `key` as soon as a worker is free (a later `add_after` is then moot)."""
        timer = self._later.pop(key, None)
        if timer is not None:
            timer.cancel()
        priority = self.URGENT if urgent else self.DUE
        queued = self._queued.get(key)
        if queued is not None and queued <= priority:
            return  # queued already, as urgent as this or more
        self._queued[key] = priority
        if key not in self._working:
            self._put(key, priority)

    def add_after(self, key: K, delay: float) -> None:
        """Work on `key` in `delay` seconds, or sooner if it is (or was) due earlier."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        timer = self._later.get(key)
        if timer is not None:
            if timer.when() <= loop.time() + delay:
                return
            timer.cancel()
        self._later[key] = loop.call_later(delay, self.add, key)

    def forget(self, key: K) -> None:
        """Drop any later work on `key` (its object is gone); queued work still runs."""
        timer = self._later.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def get(self) -> K:
        """The next key, urgent ones first; the caller owns it until `done(key)`."""
        while True:
            priority, _, key = await self._ready.get()
            if self._queued.get(key) == priority and key not in self._working:
                break
        del self._queued[key]
        self._working.add(key)
        return key

    def done(self, key: K) -> None:
        self._working.discard(key)
        priority = self._queued.get(key)
        if priority is not None:  # added while it was being worked on
            self._put(key, priority)

    def close(self) -> None:
        for timer in self._later.values():
            timer.cancel()
        self._later.clear()

    def _put(self, key: K, priority: int) -> None:
        self._ready.put_nowait((priority, next(self._order), key))


#: A pass over one key: returns the seconds until its next pass (None: none planned).
Pass = Callable[[K], Awaitable[float | None]]


class Workers(Generic[K]):
    """`count` tasks, each taking a key from the queue and running `work` on it.

    A pass that raises is logged (without failing the others) and retried after a delay that
    doubles with each failure in a row, from `retry` up to `max_retry` seconds."""

    def __init__(
        self,
        queue: WorkQueue[K],
        work: Pass[K],
        count: int,
        retry: float,
        max_retry: float = 300.0,
    ) -> None:
        self._queue = queue
        self._work = work
        self._count = count
        self._retry = retry
        self._max_retry = max_retry
        self._failures: dict[K, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        """Start the tasks in the caller's context (Kopf's Event poster is found through
        it: `kopf.event` works in a pass only if they were started from a handler)."""
        self._tasks = [
            asyncio.create_task(self._serve(), name=f"pass-worker-{i}") for i in range(self._count)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._queue.close()

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)
        self._queue.forget(key)

    async def _serve(self) -> None:
        while True:
            key = await self._queue.get()
            try:
                delay = await self._work(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(self._retry * 2 ** (failures - 1), self._max_retry)
                log.exception("the pass for %s failed (%d in a row); again in %gs",
                              key, failures, delay)  # fmt: skip
            else:
                self._failures.pop(key, None)
            finally:
                self._queue.done(key)
            if delay is not None:
                self._queue.add_after(key, delay)
