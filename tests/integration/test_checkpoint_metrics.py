"""The operator's view of the workers' checkpoints, through a real Prometheus: two worker pods'
`sparsam_trainer.telemetry` endpoints (one wrote an older checkpoint, one the newest), scraped
by Debian's Prometheus and read back with `checkpoint_facts` (three queries for every job)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import start_http_server

from sparsam.demo.prometheus import ScrapeJob, running_prometheus
from sparsam.devcluster.cluster import free_port
from sparsam.providers.metrics import CheckpointFacts, PrometheusMetrics, checkpoint_facts
from sparsam_trainer.telemetry import CheckpointMetrics


@contextmanager
def serving(metrics: CheckpointMetrics, port: int) -> Iterator[None]:
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        yield
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_the_newest_checkpoint_of_each_job_is_read_back(tmp_path: Path) -> None:
    before, newest = 1_800_000_000.0, 1_800_000_600.0
    # Worker 0 of "digits" wrote step 100 and then lost the main rank in an elastic restart;
    # worker 1 wrote step 180 since. Another job's only worker has written one checkpoint.
    first, second = CheckpointMetrics("ml", "digits"), CheckpointMetrics("ml", "digits")
    first.written(step=100, seconds=4.0, at=before)
    second.written(step=180, seconds=6.5, at=newest)
    other = CheckpointMetrics("vision", "resnet")
    other.written(step=7, seconds=0.5, at=before)
    idle = CheckpointMetrics("ml", "fresh")  # no checkpoint yet: exports nothing
    ports = [free_port() for _ in range(4)]
    targets = [f"127.0.0.1:{p}" for p in ports]
    with (
        serving(first, ports[0]),
        serving(second, ports[1]),
        serving(other, ports[2]),
        serving(idle, ports[3]),
        running_prometheus([ScrapeJob("workers", targets)], tmp_path / "prometheus") as prom,
    ):
        source = PrometheusMetrics(prom.url)
        expected = {
            ("ml", "digits"): CheckpointFacts(6.5, 180, datetime.fromtimestamp(newest, UTC)),
            ("vision", "resnet"): CheckpointFacts(0.5, 7, datetime.fromtimestamp(before, UTC)),
        }
        # Prometheus scrapes the targets at different offsets: until it has scraped the
        # second "digits" worker, the older checkpoint is the newest it knows.
        deadline = time.monotonic() + 30
        facts: dict[tuple[str, str], CheckpointFacts] = {}
        while time.monotonic() < deadline and facts != expected:
            facts = checkpoint_facts(source)
            time.sleep(0.5)
    assert facts == expected


def test_an_unreachable_prometheus_reports_nothing_rather_than_zero() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening
        source = PrometheusMetrics(f"http://127.0.0.1:{sock.getsockname()[1]}")
        assert checkpoint_facts(source) == {}
