"""GPUNodePool: identical GPU nodes of one capacity type that the operator rightsizes.

Typed model of `crds/sparsam.dev_gpunodepools.yaml`; the CRD's descriptions explain every
field. Defaults here equal the CRD's `default:` values (the apiserver applies those first).
Prices are configuration: `price_per_hour` is what one node costs per hour, in dollars (or the
one currency every pool and budget uses).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from sparsam.api.common import ObjectMeta
from sparsam.api.conditions import Condition
from sparsam.api.parse import MAX_CPU, MAX_MEMORY, Quantity, at_most, from_raw, json_name

CapacityType = Literal["spot", "on-demand"]
TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
ActionType = Literal["ScaleUp", "ScaleDown"]


@dataclass(frozen=True, slots=True)
class KwokProvider:
    """Simulated nodes that the operator creates as Node objects; takes no settings."""


@dataclass(frozen=True, slots=True)
class MachineDeploymentRef:
    name: str
    namespace: str


@dataclass(frozen=True, slots=True)
class ClusterAPIProvider:
    machine_deployment: MachineDeploymentRef


@dataclass(frozen=True, slots=True)
class Provider:
    """Exactly one of the two is set (the CRD enforces it)."""

    kwok: KwokProvider | None = None
    cluster_api: ClusterAPIProvider | None = json_name("clusterAPI", default=None)


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    effect: TaintEffect
    value: str | None = None


@dataclass(frozen=True, slots=True)
class NodeTemplate:
    gpu_type: str
    gpus_per_node: int = field(metadata=at_most(16))
    cpu: Quantity = field(metadata=at_most(MAX_CPU))
    memory: Quantity = field(metadata=at_most(MAX_MEMORY))
    instance_type: str | None = None
    labels: Mapping[str, str] | None = None
    taints: tuple[Taint, ...] | None = None


@dataclass(frozen=True, slots=True)
class GPUNodePoolSpec:
    provider: Provider
    node_template: NodeTemplate
    capacity_type: CapacityType
    price_per_hour: float = field(metadata=at_most(1000))
    max_nodes: int = field(metadata=at_most(1000))
    min_nodes: int = field(default=0, metadata=at_most(1000))
    scale_down_after: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class LastAction:
    type: ActionType | None = None
    reason: str | None = None
    time: str | None = None


@dataclass(frozen=True, slots=True)
class GPUNodePoolStatus:
    observed_generation: int | None = None
    nodes: int | None = None
    ready_nodes: int | None = None
    desired_nodes: int | None = None
    allocated_gpus: int | None = json_name("allocatedGPUs", default=None)
    utilization: float | None = None
    last_action: LastAction | None = None
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class GPUNodePool:
    """A GPUNodePool (cluster-scoped: metadata.namespace is empty)."""

    metadata: ObjectMeta
    spec: GPUNodePoolSpec
    status: GPUNodePoolStatus

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> GPUNodePool:
        """Read a raw body (as Kopf or the API client hands it over); InvalidSpec names the
        field that does not fit."""
        return cls(
            ObjectMeta.from_body(body),
            from_raw(GPUNodePoolSpec, body.get("spec"), "spec"),
            from_raw(GPUNodePoolStatus, body.get("status"), "status"),
        )
