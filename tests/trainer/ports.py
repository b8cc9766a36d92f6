"""Loopback ports and waiting for processes behind them, for tests that start real servers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now. Another process could take it before the caller binds
    it; on a test machine that is rare enough, and the caller's start-up error names the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `condition` until it is true; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still not true after {timeout:g}s")
        time.sleep(interval)
