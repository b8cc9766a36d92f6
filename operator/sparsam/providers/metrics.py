"""Traffic metrics of InferenceServices, read from Prometheus through prometheus-api-client.

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
from dataclasses import dataclass
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
