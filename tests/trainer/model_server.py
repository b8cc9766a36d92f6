"""The model server as a pod runs it: ``python -m sparsam_trainer serve`` in a subprocess.

Shared by the server tests and meant for the InferenceService tests, which run a pod's command
as a host process on a loopback address.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.trainer.ports import free_port, wait_for


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ServerProcess:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def request(
        self, method: str, path: str, body: bytes | None = None, timeout: float = 30
    ) -> Response:
        """One request on a fresh connection; ConnectionError if nothing listens."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body)
            reply = connection.getresponse()
            return Response(reply.status, dict(reply.getheaders()), reply.read())
        finally:
            connection.close()

    def predict(self, instances: Any, timeout: float = 30) -> Response:
        return self.request(
            "POST", "/v1/predict", json.dumps({"instances": instances}).encode(), timeout
        )

    def metric(self, name: str) -> float | None:
        """A sample's value from /metrics (``name`` with its labels, as exposed), or None."""
        for line in self.request("GET", "/metrics").body.decode().splitlines():
            sample, _, value = line.rpartition(" ")
            if sample == name:
                return float(value)
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self, path: str) -> int | None:
        """The status of GET `path`, or None while the server does not accept connections."""
        try:
            return self.request("GET", path, timeout=5).status
        except OSError:
            return None

    def wait_until(self, path: str, status: int, timeout: float = 60) -> None:
        def reached() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the model server exited with {self.process.returncode}:\n{self.log()}"
                )
            return self.status(path) == status

        wait_for(reached, timeout, f"GET {path} returns {status}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as the kubelet sends, and the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@contextmanager
def model_server(
    model_dir: Path, log_path: Path, *options: str, wait_ready: bool = True
) -> Iterator[ServerProcess]:
    """Start the server on a free loopback port (one torch thread) and stop it afterwards."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "sparsam_trainer",
        "serve",
        "--model-dir",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        "1",
        *options,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(process, port, log_path)
    try:
        if wait_ready:
            server.wait_until("/readyz", 200)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
