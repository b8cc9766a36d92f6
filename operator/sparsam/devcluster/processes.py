"""The dev cluster's processes: how one is recorded, found alive, and stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sparsam.devcluster import supervise

STOP_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class Process:
    name: str
    pid: int
    port: int
    binary: str
    #: `pid` is the component's supervisor (`supervise.py`), which runs `binary` as its child
    #: and keeps it running; stopping the supervisor's group stops both.
    supervised: bool = False


@dataclass(frozen=True, slots=True)
class Supervision:
    """What a supervisor recorded: its child's pid (None between runs), how often it restarted
    the component, how the last run ended and whether it gave up."""

    pid: int | None
    restarts: int
    last_exit: str | None
    last_exit_at: str | None
    gave_up: bool

    @classmethod
    def load(cls, record: Path) -> Supervision | None:
        try:
            raw = json.loads(record.read_text())
            return cls(
                pid=raw["pid"],
                restarts=int(raw["restarts"]),
                last_exit=raw["last_exit"],
                last_exit_at=raw["last_exit_at"],
                gave_up=bool(raw["gave_up"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def alive(process: Process) -> bool:
    """True when `process.pid` is running and is still our binary, or our supervisor of it
    (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    except OSError:
        return False
    argv = cmdline.split(b"\0")
    if process.supervised:
        if supervise.MODULE.encode() not in argv or process.binary.encode() not in argv:
            return False
    elif not argv[0].endswith(Path(process.binary).name.encode()):
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


def spawn(
    name: str,
    argv: list[str],
    port: int,
    log: Path,
    record: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], Process]:
    """Start `argv` under its supervisor, logging to `log`; the Process to record has the
    supervisor's pid. Call `arm` once it is healthy: until then an exit is not restarted."""
    if env is not None and "PYTHONPATH" in os.environ:
        env = {**env, "PYTHONPATH": os.environ["PYTHONPATH"]}  # the supervisor is ours
    with log.open("ab") as out:
        popen = subprocess.Popen(
            supervise.command(name, argv, record),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,  # our Ctrl-C does not reach it; `down` stops it
        )
    return popen, Process(name, popen.pid, port, argv[0], supervised=True)


def arm(popen: subprocess.Popen[bytes]) -> None:
    """The component was healthy: from now on its supervisor restarts it when it exits."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGUSR1)
