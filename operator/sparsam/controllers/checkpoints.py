"""Every TrainingJob's last checkpoint as its workers report it, read from Prometheus for all
jobs at once (`providers.metrics.checkpoint_facts`: three queries) and at most once a period.

The passes ask for their own job's facts. Whichever pass finds them stale refreshes them; the
others meanwhile use what is there rather than wait on a slow or unreachable Prometheus (no
retries, a 5 s timeout), so Prometheus can delay one pass per period, never all of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sparsam.providers.metrics import CheckpointFacts, JobMetricsSource, checkpoint_facts


class CheckpointReader:
    def __init__(
        self,
        source: JobMetricsSource,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._every = every_seconds
        self._clock = clock
        self._refreshing = threading.Lock()
        self._facts: dict[tuple[str, str], CheckpointFacts] = {}
        self._due = 0.0

    def facts(self, namespace: str, name: str) -> CheckpointFacts | None:
        if self._clock() >= self._due and self._refreshing.acquire(blocking=False):
            try:
                self._facts = checkpoint_facts(self._source)
                self._due = self._clock() + self._every
            finally:
                self._refreshing.release()
        return self._facts.get((namespace, name))
