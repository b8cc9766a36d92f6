"""The Prometheus metrics source without a Prometheus: what a pass sees when it is down, and
how fast it gives up (the real one is queried in the InferenceService integration test)."""

from __future__ import annotations

import socket
import time

from sparsam.providers.metrics import PrometheusMetrics, ServingQueries


def test_an_unreachable_prometheus_is_missing_data_at_once_not_after_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        source = PrometheusMetrics(f"http://127.0.0.1:{port}")
        started = time.monotonic()
        sample = source.sample(ServingQueries().rps.render("web", "clf"))
        took = time.monotonic() - started
    assert sample.value is None
    assert sample.reason.startswith(f"Prometheus unreachable at http://127.0.0.1:{port}")
    # No retries with backoff: the pass holds its replicas and asks again next time.
    assert took < 1.0, took


def test_queries_name_the_service() -> None:
    rendered = ServingQueries().rps.render("web", "clf")
    assert 'namespace="web",inference_service="clf"' in rendered
    assert rendered.startswith("sum(rate(sparsam_activator_requests_total{")
