"""A real Prometheus scrapes the model server and counts its requests as the client sent them.

This is the path the operator's autoscaler reads (rps from ``sparsam_server_requests_total``,
idleness from the last-request timestamp), so it is tested end to end rather than by parsing
``/metrics`` ourselves.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from tests.trainer import exported_models as tiny
from tests.trainer.model_server import model_server
from tests.trainer.ports import wait_for

from sparsam.demo import prometheus as prometheus_helper
from sparsam.demo.prometheus import PrometheusError, ScrapeJob, running_prometheus

torch.set_num_threads(1)

OK_REQUESTS = 5
BAD_REQUESTS = 3


def test_prometheus_counts_the_requests_sent(tmp_path: Path) -> None:
    model_dir = tiny.export_image(tiny.image_model(), tmp_path / "model")
    with model_server(model_dir, tmp_path / "server.log") as server:
        job = ScrapeJob("model-server", [f"127.0.0.1:{server.port}"], labels={"task": "tiny"})
        with running_prometheus([job], tmp_path / "prometheus") as prometheus:
            sent_at = time.time()
            for seed in range(OK_REQUESTS):
                assert server.predict(tiny.images(2, seed=seed)).status == 200
            for _ in range(BAD_REQUESTS):
                assert server.predict([]).status == 400

            expected = {"200": OK_REQUESTS, "400": BAD_REQUESTS, "503": 0}

            def scraped() -> bool:
                counts = prometheus.values(
                    'sparsam_server_requests_total{job="model-server"}', "code"
                )
                return counts == expected

            wait_for(scraped, 20, f"Prometheus reports requests by code as {expected}")

            assert prometheus.values('up{job="model-server"}', "task") == {"tiny": 1.0}
            instances = prometheus.values("sparsam_server_instances_total", "job")
            assert instances == {"model-server": 2.0 * OK_REQUESTS}
            last = prometheus.values("sparsam_server_last_request_timestamp_seconds", "job")
            assert last["model-server"] >= sent_at
            assert prometheus.values("sparsam_server_ready", "job") == {"model-server": 1.0}
            assert prometheus.values("sparsam_server_model_load_seconds > 0", "job") != {}


def test_a_missing_prometheus_binary_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARSAM_PROMETHEUS", str(tmp_path / "prometheus"))
    with pytest.raises(PrometheusError, match=f"SPARSAM_PROMETHEUS={tmp_path}/prometheus: no such"):
        prometheus_helper.find_binary()

    monkeypatch.delenv("SPARSAM_PROMETHEUS")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(prometheus_helper, "DEBIAN_BINARY", tmp_path / "usr-bin-prometheus")
    with (
        pytest.raises(PrometheusError, match="apt-get install prometheus"),
        running_prometheus([], tmp_path / "unused"),
    ):
        pass
