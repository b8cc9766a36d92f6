"""What the operator learns from a training worker: its checkpoints, as Prometheus metrics.

Workers have no rights on the Kubernetes API (by design), and the operator already reads
Prometheus; so the worker that writes checkpoints exports how long its last write took and
which step and time it holds, and the operator reads them back (`providers.metrics`) for the
Young/Daly cadence (its checkpoint cost C) and `status.lastCheckpoint`.

    SPARSAM_METRICS_PORT=9400      served on every pod's local rank 0; unset: nothing served
    SPARSAM_METRICS_ADDR=10.0.0.7  the address to bind (default all), for tests on one host
    SPARSAM_NAMESPACE, SPARSAM_JOB the `namespace` and `trainingjob` labels

A private registry keeps the exposition to these series. Gauges, not a histogram: the
operator wants the recent write time, and after an elastic restart the worker that writes may
be another one (Prometheus keeps each pod's series apart; the operator takes the newest).
"""

from __future__ import annotations

import logging
import os
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, start_http_server

PORT_ENV: Final = "SPARSAM_METRICS_PORT"
ADDR_ENV: Final = "SPARSAM_METRICS_ADDR"

log = logging.getLogger(__name__)


class CheckpointMetrics:
    def __init__(self, namespace: str, job: str) -> None:
        self._labels = (namespace, job)
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("namespace", "trainingjob")
        self._write = Gauge(
            "sparsam_trainer_checkpoint_write_seconds",
            "How long the last checkpoint took to write (serialise, fsync, rename).",
            labels,
            registry=self.registry,
        )
        self._step = Gauge(
            "sparsam_trainer_last_checkpoint_step",
            "The training step of the last checkpoint written.",
            labels,
            registry=self.registry,
        )
        self._time = Gauge(
            "sparsam_trainer_last_checkpoint_timestamp_seconds",
            "When the last checkpoint was written (Unix time).",
            labels,
            registry=self.registry,
        )

    def written(self, step: int, seconds: float, at: float) -> None:
        """A checkpoint of `step` took `seconds` to write, finished at Unix time `at`. The
        series appear with the first one: a worker that has written none exports nothing
        (not a zero the operator would take for a measurement)."""
        self._write.labels(*self._labels).set(seconds)
        self._step.labels(*self._labels).set(step)
        self._time.labels(*self._labels).set(at)

    @classmethod
    def from_env(cls) -> CheckpointMetrics:
        return cls(os.environ.get("SPARSAM_NAMESPACE", ""), os.environ.get("SPARSAM_JOB", ""))

    def serve_from_env(self) -> int | None:
        """Serve /metrics where SPARSAM_METRICS_PORT says; the port, or None when unset or
        not bindable (training goes on without the endpoint: the operator then keeps its
        default checkpoint cost)."""
        raw = os.environ.get(PORT_ENV)
        if not raw:
            return None
        try:
            port = int(raw)
            addr = os.environ.get(ADDR_ENV, "0.0.0.0")  # noqa: S104 - the pod's own network
            start_http_server(port, addr=addr, registry=self.registry)
        except (ValueError, OSError) as exc:
            log.warning("no checkpoint metrics: cannot serve on %s=%r (%s)", PORT_ENV, raw, exc)
            return None
        return port
