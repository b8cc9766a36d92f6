"""`sparsam activator` as its own process (``python -m sparsam.activator``), for the tests that
run it end to end: against the real model server, and against the dev cluster."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.trainer.ports import free_port, wait_for


class ActivatorProcess:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            reply = connection.getresponse()
            return reply.status, reply.read()
        finally:
            connection.close()

    def metric(self, sample: str) -> float | None:
        """A sample's value from /-/metrics (name with its labels, as exposed), or None."""
        for line in self.get("/-/metrics")[1].decode().splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self, path: str) -> int | None:
        try:
            return self.get(path, timeout=5)[0]
        except OSError:
            return None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as the kubelet sends, and the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@contextmanager
def activator_process(
    log_path: Path, *options: str, ready_path: str = "/-/healthz", timeout: float = 60
) -> Iterator[ActivatorProcess]:
    """Start the activator on a free loopback port, wait until `ready_path` answers 200, and
    stop it afterwards."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "sparsam.activator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *options,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    front = ActivatorProcess(process, port, log_path)

    def started() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the activator exited with {process.returncode}:\n{front.log()}")
        return front.status(ready_path) == 200

    try:
        wait_for(started, timeout, f"GET {ready_path} of the activator returns 200")
        yield front
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
