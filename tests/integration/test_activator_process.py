"""The activator as a real process, in static mode (no cluster): no request lost across a
wake-up of the real model server, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch
from tests.activator_process import activator_process
from tests.trainer.exported_models import export_image, image_model, images, pixels
from tests.trainer.model_server import ServerProcess
from tests.trainer.ports import free_port

REQUESTS = 1000
CONCURRENCY = 50
SERVICE = "team/digits"


def start_model_server(model_dir: Path, port: int, log_path: Path) -> ServerProcess:
    """``python -m sparsam_trainer serve`` on `port`, as a replica's container would run it."""
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
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return ServerProcess(process, port, log_path)


async def send_all(
    url: str, instances: list[Any], start_server: Any, server_after: float
) -> list[tuple[int, Any]]:
    """POST every instance (one per request), CONCURRENCY at a time; start the model server
    `server_after` seconds after the first requests went out."""
    results: list[tuple[int, Any]] = [(0, None)] * len(instances)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(instances)):
        queue.put_nowait(index)
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONCURRENCY), timeout=timeout
    ) as session:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                async with session.post(url, json={"instances": [instances[index]]}) as reply:
                    body = await reply.read()
                    results[index] = (reply.status, json.loads(body) if body else None)

        workers = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
        await asyncio.sleep(server_after)
        start_server()
        await asyncio.gather(*workers)
    return results


def test_no_request_is_lost_across_a_wake_up(tmp_path: Path) -> None:
    model = image_model()
    model_dir = export_image(model, tmp_path / "model")
    instances = images(REQUESTS, seed=7)
    with torch.no_grad():
        expected = torch.softmax(model(pixels(instances)), dim=1)
    port = free_port()  # nothing listens here until the server starts: a replica waking up
    servers: list[ServerProcess] = []
    with activator_process(
        tmp_path / "activator.log",
        "--backend",
        f"{SERVICE}=127.0.0.1:{port}",
        "--hold-timeout",
        "60",
    ) as front:
        try:
            results = asyncio.run(
                send_all(
                    f"{front.url}/{SERVICE}/v1/predict",
                    instances,
                    lambda: servers.append(
                        start_model_server(model_dir, port, tmp_path / "server.log")
                    ),
                    server_after=1.0,
                )
            )
            (server,) = servers
            failed = [(i, r) for i, r in enumerate(results) if r[0] != 200]
            assert not failed, f"{len(failed)} failed, e.g. {failed[:3]}\n{front.log()[-3000:]}"
            for index, (_, body) in enumerate(results):
                (prediction,) = body["predictions"]
                assert prediction["index"] == int(expected[index].argmax())
                assert prediction["scores"] == pytest.approx(expected[index].tolist(), abs=1e-4)
            labels = '{inference_service="digits",namespace="team"}'
            # The first CONCURRENCY requests waited for the server; every request was counted.
            held = front.metric(f"sparsam_activator_hold_seconds_count{labels}")
            assert held is not None and held >= CONCURRENCY
            assert front.metric(f"sparsam_activator_requests_total{labels}") == REQUESTS
            assert (
                front.metric(
                    'sparsam_activator_responses_total{code="200",inference_service="digits",'
                    'namespace="team"}'
                )
                == REQUESTS
            )
            assert front.metric(f"sparsam_activator_held_requests{labels}") == 0
            # Each request reached the model exactly once: retries never duplicated one.
            assert server.metric('sparsam_server_requests_total{code="200"}') == REQUESTS
        finally:
            for server in servers:
                server.stop()
        assert front.stop() == 0


class SlowHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(1.0)
        body = b'{"slow": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def slow_backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_sigterm_finishes_in_flight_answers_held_and_exits_0(tmp_path: Path) -> None:
    with (
        slow_backend() as slow_port,
        activator_process(
            tmp_path / "activator.log",
            "--backend",
            f"team/slow=127.0.0.1:{slow_port}",
            "--backend",
            f"team/cold=127.0.0.1:{free_port()}",
            "--grace-period",
            "3",
            "--log-format",
            "json",
        ) as front,
    ):
        answers: dict[str, tuple[int, bytes] | BaseException] = {}

        def ask(path: str) -> None:
            try:
                answers[path] = front.get(path, timeout=30)
            except BaseException as error:
                answers[path] = error

        threads = [
            threading.Thread(target=ask, args=(path,)) for path in ("/team/slow/x", "/team/cold/x")
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        stopped = time.monotonic()
        front.process.send_signal(15)
        for thread in threads:
            thread.join(30)
        code = front.process.wait(30)
        took = time.monotonic() - stopped
        assert code == 0
        assert answers["/team/slow/x"] == (200, b'{"slow": true}')
        cold = answers["/team/cold/x"]
        assert isinstance(cold, tuple) and cold[0] == 503, cold
        assert took < 3 + 2
        # Once stopped, nothing listens.
        assert front.status("/-/healthz") is None
        records = [json.loads(line) for line in front.log().splitlines() if line.strip()]
        assert any(r["message"] == "stopped" for r in records)
