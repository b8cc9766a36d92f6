"""A real Prometheus for the demo and the tests: Debian's ``prometheus`` binary on a free
loopback port.

`running_prometheus` writes a generated config that scrapes the given targets, starts the binary
with its storage in a test's temporary directory, waits for ``/-/ready``, and stops it afterwards.
`Prometheus.query` runs an instant PromQL query through the HTTP API. The binary is found as
``$SPARSAM_PROMETHEUS``, else ``prometheus`` on ``PATH``, else ``/usr/bin/prometheus``; when it is
missing the error says how to get it.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsam.devcluster.cluster import free_port

DEBIAN_BINARY = Path("/usr/bin/prometheus")


class PrometheusError(RuntimeError):
    """Prometheus could not be started, or answered a query with an error."""


def find_binary() -> Path:
    configured = os.environ.get("SPARSAM_PROMETHEUS")
    if configured:
        if not Path(configured).is_file():
            raise PrometheusError(f"SPARSAM_PROMETHEUS={configured}: no such file")
        return Path(configured)
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    if DEBIAN_BINARY.is_file():
        return DEBIAN_BINARY
    raise PrometheusError(
        "the prometheus binary is missing: install Debian's package (apt-get install prometheus) "
        "or set SPARSAM_PROMETHEUS to a prometheus binary"
    )


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: ``targets`` are ``host:port`` pairs serving ``metrics_path``."""

    name: str
    targets: Sequence[str]
    metrics_path: str = "/metrics"
    labels: Mapping[str, str] | None = None


@dataclass(frozen=True)
class FileScrapeJob:
    """Targets listed in `targets_file` (Prometheus' file_sd JSON: a list of {"targets": [...],
    "labels": {...}}), re-read every second, keeping the series' own labels (honor_labels, as
    the chart's PodMonitor sets). For targets that come and go, such as pods: the test or demo
    that runs them writes the file. (Debian's Prometheus has no Kubernetes discovery.)"""

    name: str
    targets_file: Path


def _scrape_config(job: ScrapeJob | FileScrapeJob, scrape_interval: str) -> dict[str, Any]:
    if isinstance(job, FileScrapeJob):
        return {
            "job_name": job.name,
            "scrape_interval": scrape_interval,
            "honor_labels": True,
            "file_sd_configs": [{"files": [str(job.targets_file)], "refresh_interval": "1s"}],
        }
    return {
        "job_name": job.name,
        "metrics_path": job.metrics_path,
        "scrape_interval": scrape_interval,
        "static_configs": [{"targets": list(job.targets), "labels": dict(job.labels or {})}],
    }


def config_text(jobs: Sequence[ScrapeJob | FileScrapeJob], scrape_interval: str) -> str:
    """The prometheus.yml for `jobs`. JSON is valid YAML, so no YAML library is needed."""
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [_scrape_config(job, scrape_interval) for job in jobs],
    }
    return json.dumps(config, indent=2)


class Prometheus:
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

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector: ``[{"metric": {labels}, "value": [t, "v"]}, ...]``."""
        status, body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        reply = json.loads(body)
        if status != 200 or reply.get("status") != "success":
            raise PrometheusError(f"query {promql!r} failed ({status}): {reply.get('error')}")
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def values(self, promql: str, label: str) -> dict[str, float]:
        """An instant query's values keyed by one label's value."""
        return {
            sample["metric"].get(label, ""): float(sample["value"][1])
            for sample in self.query(promql)
        }

    def is_ready(self) -> bool:
        if self.process.poll() is not None:
            raise PrometheusError(
                f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}"
            )
        try:
            return self.get("/-/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_prometheus(
    jobs: Sequence[ScrapeJob | FileScrapeJob],
    directory: Path,
    *,
    scrape_interval: str = "1s",
    start_timeout: float = 30,
) -> Iterator[Prometheus]:
    """Prometheus scraping `jobs`, with its config, data and log under `directory`."""
    binary = find_binary()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(config_text(jobs, scrape_interval))
    port = free_port()
    log_path = directory / "prometheus.log"
    command = [
        str(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # No console templates in a test, and none of Debian's defaults' paths need exist.
        "--web.console.templates=",
        "--web.console.libraries=",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    prometheus = Prometheus(process, port, log_path)
    try:
        deadline = time.monotonic() + start_timeout
        while not prometheus.is_ready():
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"prometheus on port {port} not ready after {start_timeout:g}s:\n"
                    f"{prometheus.log_tail()}"
                )
            time.sleep(0.05)
        yield prometheus
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
