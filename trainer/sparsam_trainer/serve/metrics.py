"""The server's Prometheus metrics, in a registry of their own.

A private `CollectorRegistry` (rather than prometheus_client's global one) keeps the exposition
to what is listed here, and lets tests build many servers in one process. Only prediction
requests are counted: probes and scrapes are not traffic, and the operator autoscales (and scales
to zero) on these series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

# Prediction latency runs from a millisecond (a small CNN) to seconds (a big batch on a busy CPU).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Codes a prediction can end with in normal operation; created at zero so rate() and increase()
# see the first request of each (Prometheus cannot compute an increase from a series' first point).
_EXPECTED_CODES = ("200", "400", "503")


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sparsam_server_requests",
            "Prediction requests handled, by HTTP status code.",
            ["code"],
            registry=self.registry,
        )
        for code in _EXPECTED_CODES:
            self.requests.labels(code=code)
        self.request_duration = Histogram(
            "sparsam_server_request_duration_seconds",
            "Time from receiving a prediction request to sending its response, queueing included.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_duration = Histogram(
            "sparsam_server_inference_seconds",
            "Time the model spent on one request's batch (encoding included), queueing excluded.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "sparsam_server_in_flight_requests",
            "Prediction requests received and not yet answered (running or queued).",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "sparsam_server_batch_size",
            "Instances per successful prediction request.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.instances = Counter(
            "sparsam_server_instances",
            "Instances predicted successfully.",
            registry=self.registry,
        )
        self.last_request = Gauge(
            "sparsam_server_last_request_timestamp_seconds",
            "Unix time of the last prediction request; 0 before the first. Idle time for "
            "scale-to-zero is now minus this.",
            registry=self.registry,
        )
        self.model_load = Gauge(
            "sparsam_server_model_load_seconds",
            "Seconds it took to load and warm up the model; 0 until it is loaded.",
            registry=self.registry,
        )
        self.ready = Gauge(
            "sparsam_server_ready",
            "1 while the server accepts predictions (model loaded and warmed, not shutting down).",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "sparsam_server_model_info",
            "Always 1; labels describe the model being served.",
            ["task", "format"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
