"""How often the passes of one kind write a status report (`handlers.passes`): a token bucket.

A status write is not cheap for the apiserver. A merge PATCH of a TrainingJob's status decodes,
validates and stores the whole object with its managed fields, and its watchers are sent the
result: about 4 ms of the apiserver's CPU on the dev cluster (a CPU profile of 218 writes a
second), as much as a pod create. In `benchmarks/operator_scale.py` (500 jobs at 50 a second on
two cores) unpaced status writes, almost two a job, were what put the apiserver's watches
seconds behind for every client, the scheduler included; paced, the burst has about one status
write for every two jobs, and its workers are seen in time (docs/benchmarks.md).

A report is what a user reads; the workers are what the job needs. So reports yield: each kind
writes at most `rate` a second (`sparsam run --status-writes-per-second`), after a burst of
`burst`. A pass whose report finds no token leaves it to its next pass, which writes the status
of its own moment. Alone, a job is Pending at once. What a pass must make durable before it acts
(the counts of `kube.workers.WorkerActuator.write_status`) is never paced.

Among reports, an object's first goes first: until it, `kubectl get` shows the object with no
phase at all. An update takes a token only while half a burst more are left, so in a burst the
first reports take every token and the updates wait; once those are written, the updates have
the whole rate again. With every report alike, that benchmark's burst of about 1,000 reports
(Pending, then Running) at 20 a second would be written in no order, and some jobs would show
no phase for most of a minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`take` is True at most `rate` times a second, and `burst` (default: a second's worth,
    at least one) times at once; `take(update=True)` only while half of the rest of a burst
    is left over. Thread-safe: passes run in threads."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = max(1.0, rate) if burst is None else burst
        self._reserve = max(0.0, self._burst - 1) / 2
        self._clock = clock
        self._tokens = self._burst
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, update: bool = False) -> bool:
        """A token for a report: an object's first, or an `update` of a status it has."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens < 1 + (self._reserve if update else 0.0):
                return False
            self._tokens -= 1
            return True
