"""The dev cluster's processes: how one is recorded, found alive, and stopped."""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

STOP_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class Process:
    name: str
    pid: int
    port: int
    binary: str


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def alive(process: Process) -> bool:
    """True when `process.pid` is running and is still our binary (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    except OSError:
        return False
    if not cmdline.split(b"\0", 1)[0].endswith(Path(process.binary).name.encode()):
        return False
    try:
        stat = Path(f"/proc/{process.pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is as good as gone


def send(process: Process, sig: signal.Signals) -> None:
    try:
        # Each process leads its own session (start_new_session), so its children go too.
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(process.pid, sig)


def stop(process: Process, *, graceful: bool = True, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM, then SIGKILL after `timeout` (only SIGKILL when not graceful); True if gone."""
    signals = (signal.SIGTERM, signal.SIGKILL) if graceful else (signal.SIGKILL,)
    for sig in signals:
        send(process, sig)
        deadline = time.monotonic() + timeout
        while alive(process) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not alive(process):
            return True
    return False


def tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(line.strip() for line in text[-lines:]) or "empty log"
