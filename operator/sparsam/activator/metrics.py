"""The activator's Prometheus metrics, in a registry of their own.

The operator autoscales InferenceServices on these series, and scales them to zero on them, so
they are counted here (where every request passes, including those held while a service has no
replica) rather than on the model servers (which see nothing while scaled to zero).

Every InferenceService the activator knows has its requests counter and its two gauges from the
start, at 0: "present and zero" means "the activator is up and nobody called", where a missing
series means "no data" (and the operator never scales to zero on missing data). The
last-request gauge appears with a service's first request.
"""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sparsam.activator.backends import ServiceKey

__all__ = ["CONTENT_TYPE_LATEST", "ActivatorMetrics"]

# From a request that waits a moment for a connection to a cold start of minutes (a GPU node).
_HOLD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_LABELS = ("namespace", "inference_service")


class ActivatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sparsam_activator_requests",
            "Requests received for an InferenceService (0 from the start for every known one).",
            _LABELS,
            registry=self.registry,
        )
        self.responses = Counter(
            "sparsam_activator_responses",
            "Responses sent, by HTTP status code (the backend's, or the activator's own 404, "
            "502, 503, 504).",
            [*_LABELS, "code"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "sparsam_activator_requests_in_flight",
            "Requests received and not yet answered, held ones included.",
            _LABELS,
            registry=self.registry,
        )
        self.held = Gauge(
            "sparsam_activator_held_requests",
            "Requests waiting for a ready replica (the hold queue's depth).",
            _LABELS,
            registry=self.registry,
        )
        self.hold_seconds = Histogram(
            "sparsam_activator_hold_seconds",
            "Time a request waited for a ready replica before it was forwarded (or answered "
            "503); requests that found one at once are not observed.",
            _LABELS,
            buckets=_HOLD_BUCKETS,
            registry=self.registry,
        )
        self.last_request = Gauge(
            "sparsam_activator_last_request_timestamp_seconds",
            "Unix time of the last request received; absent before the first.",
            _LABELS,
            registry=self.registry,
        )
        self.buffered_bytes = Gauge(
            "sparsam_activator_buffered_request_bytes",
            "Request body bytes kept in memory (held or being forwarded), as claimed from the "
            "activator's byte budget.",
            _LABELS,
            registry=self.registry,
        )
        self.refusals = Counter(
            "sparsam_activator_refused",
            "Requests refused before they were held or forwarded, by reason: buffer_full_service "
            "and buffer_full_total (503, a byte budget is spent), body_too_large (413), "
            "body_too_slow (408), body_unreadable (400).",
            [*_LABELS, "reason"],
            registry=self.registry,
        )
        self.connections_cut = Counter(
            "sparsam_activator_connections_cut",
            "Connections closed before a request was read: too_many_connections (the cap) or "
            "header_timeout (the request's headers came too slowly).",
            ["reason"],
            registry=self.registry,
        )
        self._seen: set[ServiceKey] = set()
        self._reasons: set[tuple[ServiceKey, str]] = set()
        self._codes: set[tuple[ServiceKey, str]] = set()
        self._in_flight: dict[ServiceKey, int] = {}

    def track(self, services: Collection[ServiceKey]) -> None:
        """Create the series of every service in `services` at 0, and drop those of services
        that are gone (unless a request of theirs is still in flight)."""
        for key in services:
            if key not in self._seen:
                self._create(key)
        for key in self._seen - set(services):
            if not self._in_flight.get(key):
                self._drop(key)

    def received(self, key: ServiceKey) -> None:
        if key not in self._seen:
            self._create(key)
        self.requests.labels(*key).inc()
        self.in_flight.labels(*key).inc()
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        self.last_request.labels(*key).set_to_current_time()

    def answered(self, key: ServiceKey, code: int) -> None:
        self.in_flight.labels(*key).dec()
        self._in_flight[key] -= 1
        self.responses.labels(*key, str(code)).inc()
        self._codes.add((key, str(code)))

    def buffered(self, key: ServiceKey, size: int) -> None:
        if key in self._seen:
            self.buffered_bytes.labels(*key).set(size)

    def refused(self, key: ServiceKey, reason: str) -> None:
        self.refusals.labels(*key, reason).inc()
        self._reasons.add((key, reason))

    def connection_cut(self, reason: str) -> None:
        self.connections_cut.labels(reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def _create(self, key: ServiceKey) -> None:
        self._seen.add(key)
        self.requests.labels(*key)
        self.in_flight.labels(*key)
        self.held.labels(*key)
        self.buffered_bytes.labels(*key)

    def _drop(self, key: ServiceKey) -> None:
        self._seen.discard(key)
        self._in_flight.pop(key, None)
        for metric in (
            self.requests,
            self.in_flight,
            self.held,
            self.hold_seconds,
            self.last_request,
            self.buffered_bytes,
        ):
            metric.remove(*key)
        for seen in [seen for seen in self._codes if seen[0] == key]:
            self._codes.discard(seen)
            self.responses.remove(*key, seen[1])
        for refused in [refused for refused in self._reasons if refused[0] == key]:
            self._reasons.discard(refused)
            self.refusals.remove(*key, refused[1])
