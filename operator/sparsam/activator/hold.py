"""Holding requests while a service has no ready replica.

Each service has a bounded hold queue: at most ``--max-held`` requests wait in it at once; the
next one is answered 503 at once rather than piling up memory and file descriptors behind a
service that may take minutes to come up. A held request waits for its service's backends to
change (not on a timer), so it is released the moment a replica turns ready, and it asks the
waker to wake the service about once per interval while it waits; the waker's throttle turns
a crowd of such asks into one API write per interval per service.

A request also counts as held while it retries backends that refuse connections (ready in the
API, not yet listening), since it is waiting for a replica just the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from sparsam.activator.backends import Backends, ServiceKey
from sparsam.activator.metrics import ActivatorMetrics
from sparsam.activator.wake import ServiceNotFoundError, ThrottledWaker


class QueueFullError(Exception):
    """The service's hold queue is full."""


class HoldTimeoutError(Exception):
    """No ready replica within the hold timeout."""


class HoldQueues:
    """The depth of every service's hold queue, mirrored in the held-requests gauge."""

    def __init__(self, max_held: int, metrics: ActivatorMetrics) -> None:
        self.max_held = max_held
        self._metrics = metrics
        self._depth: dict[ServiceKey, int] = {}

    def depth(self, key: ServiceKey) -> int:
        return self._depth.get(key, 0)

    def hold(self, key: ServiceKey, clock: Callable[[], float] = time.monotonic) -> Hold:
        return Hold(self, key, clock)

    def _enter(self, key: ServiceKey) -> None:
        depth = self._depth.get(key, 0)
        if depth >= self.max_held:
            raise QueueFullError(f"{depth} requests are already waiting")
        self._depth[key] = depth + 1
        self._metrics.held.labels(*key).inc()

    def _leave(self, key: ServiceKey) -> None:
        self._depth[key] -= 1
        if not self._depth[key]:
            del self._depth[key]
        self._metrics.held.labels(*key).dec()


class Hold:
    """One request's time in its service's queue: it may enter and leave more than once (held,
    forwarded, told 503 by a backend that is still loading, held again); `finish` records the
    total once."""

    def __init__(self, queues: HoldQueues, key: ServiceKey, clock: Callable[[], float]) -> None:
        self._queues = queues
        self._key = key
        self._clock = clock
        self._since: float | None = None
        self.seconds = 0.0
        self.held = False

    def enter(self) -> None:
        """Join the queue (no-op when in it). QueueFullError when it is full."""
        if self._since is None:
            self._queues._enter(self._key)
            self._since = self._clock()
            self.held = True

    def leave(self, at: float | None = None) -> None:
        """Leave the queue (no-op when not in it); `at`: when the wait ended, if before now."""
        if self._since is not None:
            self.seconds += max((self._clock() if at is None else at) - self._since, 0.0)
            self._since = None
            self._queues._leave(self._key)

    def finish(self, metrics: ActivatorMetrics) -> None:
        self.leave()
        if self.held:
            metrics.hold_seconds.labels(*self._key).observe(self.seconds)


async def wait_ready(
    key: ServiceKey,
    backends: Backends,
    waker: ThrottledWaker,
    hold: Hold,
    deadline: Callable[[], float],
    clock: Callable[[], float] = time.monotonic,
    interrupted: asyncio.Event | None = None,
) -> Sequence[str]:
    """The ready addresses of `key`, waiting (held) while there are none.

    ServiceNotFoundError when the service does not exist (known from the backends' view, or
    from the waker), QueueFullError, HoldTimeoutError at `deadline()`: a function, because
    shutting down brings it forward and sets `interrupted` to have it looked at again.
    """
    next_wake = clock()
    wake: asyncio.Task[None] | None = None
    try:
        while True:
            if backends.synced():
                if not backends.known(key):
                    raise ServiceNotFoundError(f"InferenceService {key[0]}/{key[1]} not found")
                addresses = backends.ready(key)
                if addresses:
                    return addresses
            if wake is not None and wake.done():
                wake.result()  # ServiceNotFoundError; the throttle swallows other failures
                wake = None
            now = clock()
            if now >= deadline():
                raise HoldTimeoutError
            hold.enter()
            if backends.synced() and wake is None and now >= next_wake:
                wake = asyncio.create_task(waker.wake(key))
                next_wake = now + waker.interval
            changed = asyncio.create_task(backends.changed(key))
            waiting: set[asyncio.Future[Any]] = {changed}
            if wake is not None:
                waiting.add(wake)
            if interrupted is not None and not interrupted.is_set():
                waiting.add(asyncio.ensure_future(interrupted.wait()))
            until = deadline()
            if wake is None and backends.synced():
                until = min(until, next_wake)
            await asyncio.wait(
                waiting, timeout=max(until - now, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
            for future in waiting:
                if future is not wake:
                    future.cancel()
    finally:
        if wake is not None and not wake.done():
            wake.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await wake
