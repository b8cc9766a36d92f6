"""What every pod sparsam creates shares: where it may run, and Pod Security "restricted".

`Placement.pod_fields` turns a spot policy into tolerations, a nodeSelector and node affinity:

- Prefer: tolerates the spot taint and prefers spot nodes (preferred node affinity);
- Require: tolerates the spot taint and requires a spot node (required node affinity);
- Never: requires a node that is not spot.

Spot nodes are recognised by any of the placement's spot labels (Karpenter, GKE, EKS managed
node groups by default). A CostPolicy's allowedGPUTypes becomes a required
`nvidia.com/gpu.product In (...)`. Pods asking for GPUs tolerate the GPU taint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from sparsam.api import constants as c
from sparsam.api.common import SpotPolicy

#: A non-root uid for images that do not name one (Pod Security "restricted" needs non-root).
DEFAULT_UID: Final = 65532
#: (label, value) pairs that mark a spot node.
DEFAULT_SPOT_LABELS: Final = (
    (c.LABEL_CAPACITY_TYPE, c.CAPACITY_SPOT),
    ("cloud.google.com/gke-spot", "true"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
)
#: A container's securityContext under Pod Security "restricted".
RESTRICTED_CONTAINER: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
)
#: A pod's securityContext under Pod Security "restricted".
RESTRICTED_POD: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "runAsNonRoot": True,
        "runAsUser": DEFAULT_UID,
        "runAsGroup": DEFAULT_UID,
        "fsGroup": DEFAULT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
)
#: Labels of an owner not passed through to its pods (ours, and the ones we set).
_RESERVED_PREFIXES: Final = (f"{c.GROUP}/", c.LABEL_MANAGED_BY)


def passed_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """An owner's labels its pods carry too (team labels, for cost attribution)."""
    return {k: v for k, v in labels.items() if not any(k.startswith(p) for p in _RESERVED_PREFIXES)}


def resources(gpus: int, cpu: object, memory: object) -> dict[str, Any]:
    """A container's requests, and its GPU limit (extended resources need one)."""
    requests: dict[str, str] = {"cpu": str(cpu), "memory": str(memory)}
    if gpus <= 0:
        return {"requests": requests}
    requests[c.GPU_RESOURCE] = str(gpus)
    return {"requests": requests, "limits": {c.GPU_RESOURCE: str(gpus)}}


def _requirement(key: str, operator: str, values: Sequence[str] = ()) -> dict[str, Any]:
    req: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        req["values"] = list(values)
    return req


@dataclass(frozen=True, slots=True)
class Placement:
    """What besides the object's own spec decides where its pods go."""

    spot_labels: tuple[tuple[str, str], ...] = DEFAULT_SPOT_LABELS
    #: The effective CostPolicy's allowedGPUTypes; None allows any.
    allowed_gpu_types: tuple[str, ...] | None = None

    def pod_fields(self, gpus: int, gpu_type: str | None, spot: SpotPolicy) -> dict[str, Any]:
        """tolerations, nodeSelector and affinity of a pod."""
        tolerations: list[dict[str, Any]] = []
        if gpus > 0:
            tolerations.append({"key": c.TAINT_GPU, "operator": "Exists", "effect": "NoSchedule"})
        allowed = self.allowed_gpu_types
        # An object that names its gpuType is checked against the policy by its controller.
        gpu_types = (
            [_requirement(c.LABEL_GPU_PRODUCT, "In", allowed)]
            if allowed is not None and gpu_type is None
            else []
        )
        spot_terms = [[_requirement(k, "In", [v])] for k, v in self.spot_labels]
        required: list[list[dict[str, Any]]] = []
        preferred: list[dict[str, Any]] = []
        if spot in ("Prefer", "Require"):
            tolerations.append({"key": c.TAINT_SPOT, "operator": "Exists", "effect": "NoSchedule"})
        if spot == "Require":
            required = [term + gpu_types for term in spot_terms]
        elif spot == "Never":
            required = [[_requirement(k, "NotIn", [v]) for k, v in self.spot_labels] + gpu_types]
        else:
            preferred = [
                {"weight": 100, "preference": {"matchExpressions": term}} for term in spot_terms
            ]
            required = [gpu_types] if gpu_types else []
        node_affinity: dict[str, Any] = {}
        if required:
            node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
                "nodeSelectorTerms": [{"matchExpressions": term} for term in required]
            }
        if preferred:
            node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
        out: dict[str, Any] = {"tolerations": tolerations}
        if gpu_type:
            out["nodeSelector"] = {c.LABEL_GPU_PRODUCT: gpu_type}
        if node_affinity:
            out["affinity"] = {"nodeAffinity": node_affinity}
        return out
