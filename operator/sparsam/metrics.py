"""The operator's Prometheus metrics: stable names, documented here and in README.md.

One registry of our own (not prometheus_client's global one), served by `sparsam run
--metrics-port`. Counters only move forward; after an operator restart they start at zero and
Prometheus's rate() and increase() handle the reset.

Names (each counter is exported with the `_total` suffix):

- sparsam_cost_dollars_total{namespace, kind, name, capacity_type}
- sparsam_on_demand_equivalent_dollars_total{namespace, kind, name}
- sparsam_gpu_seconds_total{namespace, kind, name}
- sparsam_preemptions_total{namespace, name}
- sparsam_worker_failures_total{namespace, name}
- sparsam_capacity_actions_total{pool, action}
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, start_http_server

REGISTRY: Final = CollectorRegistry(auto_describe=True)

COST: Final = Counter(
    "sparsam_cost_dollars",
    "Cost accrued at the GPUNodePool prices (or the default price table).",
    ["namespace", "kind", "name", "capacity_type"],
    registry=REGISTRY,
)
ON_DEMAND_EQUIVALENT: Final = Counter(
    "sparsam_on_demand_equivalent_dollars",
    "What the same GPU time would have cost on on-demand capacity.",
    ["namespace", "kind", "name"],
    registry=REGISTRY,
)
GPU_SECONDS: Final = Counter(
    "sparsam_gpu_seconds",
    "GPU-seconds held by workers and replicas.",
    ["namespace", "kind", "name"],
    registry=REGISTRY,
)
PREEMPTIONS: Final = Counter(
    "sparsam_preemptions",
    "TrainingJob workers lost to spot preemption or node removal.",
    ["namespace", "name"],
    registry=REGISTRY,
)
WORKER_FAILURES: Final = Counter(
    "sparsam_worker_failures",
    "TrainingJob workers whose program failed (counted against backoffLimit).",
    ["namespace", "name"],
    registry=REGISTRY,
)
CAPACITY_ACTIONS: Final = Counter(
    "sparsam_capacity_actions",
    "What the GPUNodePool controller did: ScaleUp, ScaleDown, InsufficientCapacity.",
    ["pool", "action"],
    registry=REGISTRY,
)


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a pod serves its port
    """Serve /metrics on `port` in a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
