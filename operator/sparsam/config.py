"""How `sparsam run` is configured: its flags, as one frozen value (the chart sets the flags
from values.yaml). No kopf or kubernetes here, so the command line can take its defaults from
this without importing the operator."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sparsam.decisions.cost import PriceTable
from sparsam.decisions.interruption import DEFAULT_INTERRUPTION_TAINTS


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """What `sparsam run` is configured with (flags; the chart sets them from values.yaml)."""

    kubeconfig: Path | None = None
    #: How often each GPUNodePool's pass runs.
    capacity_interval: timedelta = timedelta(seconds=10)
    #: How often each TrainingJob's pass runs.
    training_interval: timedelta = timedelta(seconds=5)
    #: How often each InferenceService's traffic is read and its replicas decided.
    serving_interval: timedelta = timedelta(seconds=5)
    #: How often each CostPolicy's spending is counted.
    policy_interval: timedelta = timedelta(seconds=15)
    #: Status reports a second, per kind, after a burst of as many (`handlers.pacing`). 500
    #: running TrainingJobs whose cost changes every 30 s need 17.
    status_writes_per_second: float = 20.0
    offering_ttl: timedelta = timedelta(minutes=3)
    #: `PlannerSettings.spot_pool_max_share`: 1.0 lets the cheapest spot pool take every node.
    spot_pool_max_share: float = 1.0
    interruption_taints: tuple[str, ...] = DEFAULT_INTERRUPTION_TAINTS
    interruption_conditions: tuple[str, ...] = ()
    #: e.g. http://0.0.0.0:8080/healthz; None serves no probe.
    liveness: str | None = None
    #: Serve the operator's Prometheus metrics on this port; None serves none.
    metrics_port: int | None = None
    #: "text" (one line per record) or "json" (one JSON object per record, for log pipelines).
    log_format: str = "text"
    #: Price per GPU-hour by (GPU type or "*", capacity type), for nodes of no GPUNodePool.
    prices: PriceTable = field(default_factory=PriceTable)
    #: Where InferenceService traffic is read; None: no metrics, so replicas are held
    #: (never scaled down or to zero) and the MetricsAvailable condition says why.
    prometheus_url: str | None = None
    #: PromQL templates replacing the defaults (`providers.metrics.ServingQueries`);
    #: `{namespace}` and `{name}` stand for the InferenceService's.
    rps_query: str | None = None
    concurrency_query: str | None = None
    last_request_query: str | None = None
    #: The activator's base URL, e.g. http://sparsam-activator.sparsam-system.svc; an
    #: InferenceService's status.url is `<activator_url>/<namespace>/<name>`.
    activator_url: str | None = None
    #: The model-server image of InferenceServices that set no spec.image.
    server_image: str = "ghcr.io/sparsam/sparsam-trainer:0.1.0"
    #: The ClusterKopfPeering (kopf.dev) shared by this operator's replicas: of those running,
    #: only the one of the highest `priority` acts, the others pause. None: standalone, for
    #: a single replica (two standalone operators would both act on every object).
    peering: str | None = None
    priority: int = 0
    #: The namespaces whose TrainingJobs, InferenceServices and Deployments are served;
    #: empty: every namespace. Cluster-scoped GPUNodePools, CostPolicies and nodes are served
    #: either way, and pods are read in every namespace (a GPU node's pods, whatever theirs).
    namespaces: tuple[str, ...] = ()
