"""When a supervised component that exited is started again, and when the supervisor gives up.

Pure: the supervisor (`supervise.py`) hands in the times its child exited and gets back a delay,
or None to give up. A component that keeps dying (a bad flag, a port taken) stops after
`max_restarts` in `window` seconds instead of spinning; one that dies now and then is restarted
each time, the backoff starting over once the old exits have left the window.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    max_restarts: int = 5
    window: float = 120.0
    first_delay: float = 0.5
    max_delay: float = 15.0

    def recent(self, exits: Sequence[float], now: float) -> list[float]:
        """The exits within the window that ends at `now`."""
        return [t for t in exits if now - t <= self.window]

    def delay(self, exits: Sequence[float], now: float) -> float | None:
        """Seconds to wait before the next start, or None: give up.

        `exits` includes the exit just seen. The n-th exit in the window waits
        first_delay * 2**(n-1), capped at max_delay; exit number max_restarts + 1 gives up.
        """
        count = len(self.recent(exits, now))
        if count == 0:
            return 0.0
        if count > self.max_restarts:
            return None
        return min(self.max_delay, self.first_delay * 2.0 ** (count - 1))


def describe_exit(returncode: int) -> str:
    """`code 1` or `signal SIGKILL`, as a Popen returncode reads."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"
