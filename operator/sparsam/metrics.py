"""The operator's Prometheus metrics: stable names, documented here and in docs/operations.md.

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
- sparsam_inferenceservice_scaled_to_zero_total{namespace, name}
- sparsam_inferenceservice_wakes_total{namespace, name}

Gauges (the state at the last pass):

- sparsam_trainingjob_phase{namespace, name, phase}: 1, for the job's current phase only
- sparsam_inferenceservice_replicas{namespace, name}, ..._ready_replicas{namespace, name}
- sparsam_gpunodepool_nodes{pool}, sparsam_gpunodepool_gpus{pool},
  sparsam_gpunodepool_allocated_gpus{pool}
- sparsam_costpolicy_spent_dollars{policy}, sparsam_costpolicy_budget_dollars{policy}
"""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

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

SCALED_TO_ZERO: Final = Counter(
    "sparsam_inferenceservice_scaled_to_zero",
    "InferenceServices scaled to zero replicas after idling.",
    ["namespace", "name"],
    registry=REGISTRY,
)
WAKES: Final = Counter(
    "sparsam_inferenceservice_wakes",
    "InferenceServices woken from zero by a held request.",
    ["namespace", "name"],
    registry=REGISTRY,
)
TRAINING_PHASE: Final = Gauge(
    "sparsam_trainingjob_phase",
    "1 for a TrainingJob's current phase (no series for the other phases).",
    ["namespace", "name", "phase"],
    registry=REGISTRY,
)
REPLICAS: Final = Gauge(
    "sparsam_inferenceservice_replicas",
    "Replicas an InferenceService's pass decided on.",
    ["namespace", "name"],
    registry=REGISTRY,
)
READY_REPLICAS: Final = Gauge(
    "sparsam_inferenceservice_ready_replicas",
    "Ready replicas of an InferenceService.",
    ["namespace", "name"],
    registry=REGISTRY,
)
POOL_NODES: Final = Gauge(
    "sparsam_gpunodepool_nodes", "Nodes of a GPUNodePool.", ["pool"], registry=REGISTRY
)
POOL_GPUS: Final = Gauge(
    "sparsam_gpunodepool_gpus", "GPUs on a GPUNodePool's nodes.", ["pool"], registry=REGISTRY
)
POOL_ALLOCATED_GPUS: Final = Gauge(
    "sparsam_gpunodepool_allocated_gpus",
    "GPUs requested by pods on a GPUNodePool's nodes.",
    ["pool"],
    registry=REGISTRY,
)
POLICY_SPENT: Final = Gauge(
    "sparsam_costpolicy_spent_dollars",
    "What a CostPolicy's namespaces spent this budget period (calendar month, UTC).",
    ["policy"],
    registry=REGISTRY,
)
POLICY_BUDGET: Final = Gauge(
    "sparsam_costpolicy_budget_dollars",
    "A CostPolicy's monthly budget.",
    ["policy"],
    registry=REGISTRY,
)


def set_phase(gauge: Gauge, labels: tuple[str, ...], old: str | None, new: str | None) -> None:
    """Move a one-hot phase gauge from `old` to `new` (None: the object is gone)."""
    if old is not None and old != new:
        remove(gauge, *labels, old)
    if new is not None:
        gauge.labels(*labels, new).set(1)


def remove(gauge: Gauge, *labels: str) -> None:
    """Drop one series of a gauge, if it was ever exported (not after a restart)."""
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a pod serves its port
    """Serve /metrics on `port` in a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
