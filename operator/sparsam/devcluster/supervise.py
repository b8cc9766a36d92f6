"""A dev cluster component's supervisor: runs it as a child and starts it again when it exits.

`up` starts `python -m sparsam.devcluster.supervise --name NAME --record FILE -- BINARY ARGS...`
in a session of its own; the component is its child, in the same process group, so `down`'s
signal to the group reaches both. Until `up` has seen the component healthy and sent SIGUSR1
(`arm`), an exit ends the supervisor with the component's code, so that `up` fails with the
component's own error instead of retrying a bad flag. From then on an exit is followed by a
restart after a backoff (`restarts.RestartPolicy`), until too many in the window: then the
supervisor records that it gave up and exits, and `status` shows the component stopped.

SIGTERM (or SIGINT, SIGHUP) to the group means stop: the supervisor restarts nothing more,
waits for its child and exits. The record (JSON, replaced whole on each change) is the only
file it writes: `{"pid", "restarts", "last_exit", "last_exit_at", "gave_up"}`.

Standard library only, and nothing else of sparsam's but `restarts`: one runs per component.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from sparsam.devcluster.restarts import RestartPolicy, describe_exit

MODULE = "sparsam.devcluster.supervise"
PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """In the child before exec: the kernel SIGKILLs it when its supervisor dies, so a
    supervisor killed on its own leaves no unsupervised component behind."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the prctl
        os._exit(1)


class Supervisor:
    def __init__(self, name: str, command: list[str], record: Path, policy: RestartPolicy):
        self.name = name
        self.command = command
        self.record = record
        self.policy = policy
        self.armed = False
        self.stopping: signal.Signals | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.exits: list[float] = []
        self.last_exit: str | None = None
        self.last_exit_at: str | None = None
        self.gave_up = False

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        # Not passed on: the signal came to the whole group (`processes.send`), and a second
        # SIGTERM makes Kubernetes' components exit at once instead of shutting down.
        self.stopping = signal.Signals(signum)

    def _on_arm(self, _signum: int, _frame: FrameType | None) -> None:
        self.armed = True

    def _save(self) -> None:
        pid = self.child.pid if self.child is not None and self.child.poll() is None else None
        record = {
            "pid": pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_exit_at": self.last_exit_at,
            "gave_up": self.gave_up,
        }
        partial = self.record.with_suffix(".tmp")
        partial.write_text(json.dumps(record) + "\n")
        partial.replace(self.record)

    def _say(self, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{stamp} sparsam supervise {self.name}: {message}", file=sys.stderr, flush=True)

    def run(self) -> int:
        for stop in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(stop, self._on_stop)
        signal.signal(signal.SIGUSR1, self._on_arm)  # before the child: `up` arms it after
        self.record.parent.mkdir(parents=True, exist_ok=True)
        while self.stopping is None:
            self.child = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                preexec_fn=functools.partial(_die_with, os.getpid()),  # one thread: safe
            )
            self._save()
            returncode = self.child.wait()
            now = time.monotonic()
            self.last_exit = describe_exit(returncode)
            self.last_exit_at = datetime.now(UTC).isoformat(timespec="seconds")
            if self.stopping is not None:
                self._save()
                return 0
            if not self.armed:
                self._say(f"exited ({self.last_exit}) before it was healthy; not restarting")
                self._save()
                return returncode if returncode >= 0 else 128 - returncode
            self.exits = self.policy.recent([*self.exits, now], now)
            delay = self.policy.delay(self.exits, now)
            if delay is None:
                self.gave_up = True
                self._say(
                    f"exited ({self.last_exit}); {len(self.exits)} exits in "
                    f"{self.policy.window:.0f}s, giving up"
                )
                self._save()
                return 1
            self._say(f"exited ({self.last_exit}); restarting in {delay:.1f}s")
            self._save()
            deadline = time.monotonic() + delay
            while self.stopping is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.stopping is None:
                self.restarts += 1
        return 0


def command(name: str, argv: list[str], record: Path) -> list[str]:
    """The command line that runs `argv` supervised."""
    return [sys.executable, "-m", MODULE, "--name", name, "--record", str(record), "--", *argv]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("--name", required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    return Supervisor(args.name, args.command, args.record, RestartPolicy()).run()


if __name__ == "__main__":
    sys.exit(main())
