"""One lock per object: the passes of one object never interleave; those of two may.

A single lock over every object would serialise the passes' API calls, so a burst of new
TrainingJobs would get their pods one job at a time.
"""

from __future__ import annotations

import threading


class KeyedLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()  # guards _locks
        self._locks: dict[str, threading.Lock] = {}

    def of(self, key: str) -> threading.Lock:
        """The lock of `key` (an object's uid), made on first use."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def drop(self, key: str) -> None:
        """Forget the lock of an object that is gone."""
        with self._guard:
            self._locks.pop(key, None)
