"""What the operator reads from Prometheus (through prometheus-api-client): the traffic of
InferenceServices, and the checkpoints of TrainingJobs (`sparsam_trainer.telemetry`).

    source = PrometheusMetrics("http://prometheus.monitoring:9090")
    sample = source.sample(ServingQueries().rps.render("newsroom", "bbc-news"))
    # MetricSample(value=3.2) or MetricSample(value=None, reason="Prometheus unreachable: ...")

Missing data is not zero: an unreachable Prometheus, an error answer, an empty result or a
value that is not a finite number all come back as `value=None` with the reason in one line,
and the scaling decision then holds the replica count (`decisions.scaling`, rule 6). A query
that returns several series (a missing `sum`) is summed, which is what a per-service query
means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from sparsam.api.inferenceservice import ScalingMetric
from sparsam.decisions.scaling import MetricSample

#: Seconds a query may take before the sample counts as missing.
QUERY_TIMEOUT: Final = 5
_SELECTOR: Final = 'namespace="{namespace}",inference_service="{name}"'


@dataclass(frozen=True, slots=True)
class Query:
    """A PromQL template; `{namespace}` and `{name}` are replaced by the service's own."""

    template: str

    def render(self, namespace: str, name: str) -> str:
        return self.template.replace("{namespace}", namespace).replace("{name}", name)


@dataclass(frozen=True, slots=True)
class ServingQueries:
    """The queries the InferenceService pass asks (configurable with `sparsam run` flags).

    The defaults read the activator's metrics: every request to a service passes through it
    (`status.url`), and it exports a zero series for every service it knows, so "present and
    zero" means "the activator is up and nobody called"."""

    rps: Query = Query(f"sum(rate(sparsam_activator_requests_total{{{_SELECTOR}}}[1m]))")
    concurrency: Query = Query(f"sum(sparsam_activator_requests_in_flight{{{_SELECTOR}}})")
    last_request: Query = Query(
        f"max(sparsam_activator_last_request_timestamp_seconds{{{_SELECTOR}}})"
    )

    def for_metric(self, metric: ScalingMetric) -> Query:
        return self.rps if metric == "rps" else self.concurrency


class MetricsSource(Protocol):
    def sample(self, query: str) -> MetricSample:
        """The query's value now, or None with the reason."""
        ...


class PrometheusMetrics:
    """Instant queries against one Prometheus. Sync; the controller calls it in a thread."""

    def __init__(self, url: str, timeout: int = QUERY_TIMEOUT) -> None:
        self.url = url
        # No retries: a pass that cannot read the metric holds the replicas and tries again on
        # its next run; retrying with backoff here would only keep the pass (and its thread)
        # waiting while Prometheus is down.
        self._client = PrometheusConnect(
            url=url, disable_ssl=False, timeout=timeout, retry=Retry(total=0)
        )

    def sample(self, query: str) -> MetricSample:
        try:
            result = self._client.custom_query(query)
        except requests.RequestException as exc:
            return MetricSample(None, f"Prometheus unreachable at {self.url}: {type(exc).__name__}")
        except PrometheusApiClientException as exc:
            return MetricSample(None, f"Prometheus refused the query: {str(exc)[:200]}")
        if not result:
            return MetricSample(None, "empty result (no series)")
        total = 0.0
        for series in result:
            try:
                value = float(series["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                return MetricSample(None, "the result is not an instant vector")
            if not math.isfinite(value):
                return MetricSample(None, f"the value is {value}")
            total += value
        return MetricSample(total)

    def by_job(self, query: str) -> dict[tuple[str, str], float]:
        """A query grouped `by (namespace, trainingjob)`, as {(namespace, job): value}; series
        that are not finite numbers are left out, and so is everything when Prometheus cannot
        answer (missing data is not zero)."""
        try:
            result = self._client.custom_query(query)
        except (requests.RequestException, PrometheusApiClientException):
            return {}
        found: dict[tuple[str, str], float] = {}
        for series in result or ():
            labels = series.get("metric") or {}
            try:
                value = float(series["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            key = (str(labels.get("namespace", "")), str(labels.get("trainingjob", "")))
            if math.isfinite(value) and all(key):
                found[key] = value
        return found


@dataclass(frozen=True, slots=True)
class CheckpointFacts:
    """A job's last checkpoint as its workers report it; None where nothing says."""

    write_seconds: float | None = None
    step: int | None = None
    time: datetime | None = None


#: The trainer's series (`sparsam_trainer.telemetry`). The newest write wins across a job's
#: pods: after an elastic restart another worker may be the one that writes.
_BY_JOB: Final = "max by (namespace, trainingjob) ({metric})"
CHECKPOINT_WRITE: Final = "sparsam_trainer_checkpoint_write_seconds"
CHECKPOINT_STEP: Final = "sparsam_trainer_last_checkpoint_step"
CHECKPOINT_TIME: Final = "sparsam_trainer_last_checkpoint_timestamp_seconds"


class JobMetricsSource(Protocol):
    def by_job(self, query: str) -> Mapping[tuple[str, str], float]: ...


def checkpoint_facts(source: JobMetricsSource) -> dict[tuple[str, str], CheckpointFacts]:
    """Every job's last checkpoint, in three queries whatever the number of jobs."""
    write = source.by_job(_BY_JOB.format(metric=CHECKPOINT_WRITE))
    step = source.by_job(_BY_JOB.format(metric=CHECKPOINT_STEP))
    at = source.by_job(_BY_JOB.format(metric=CHECKPOINT_TIME))
    facts: dict[tuple[str, str], CheckpointFacts] = {}
    for key in write.keys() | step.keys() | at.keys():
        when = at.get(key)
        facts[key] = CheckpointFacts(
            write_seconds=write.get(key),
            step=int(step[key]) if key in step else None,
            time=datetime.fromtimestamp(when, UTC) if when is not None else None,
        )
    return facts
