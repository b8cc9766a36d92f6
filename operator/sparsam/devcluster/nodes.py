"""KWOK GPU nodes, labelled and tainted the way real GPU clusters label and taint them.

The nodes are plain Node objects that KWOK keeps Ready; the real scheduler places pods on them by
`nvidia.com/gpu` capacity, taints and selectors. The labels follow what a GPU node carries on a
Karpenter-managed EKS cluster with the NVIDIA GPU feature discovery installed:
`karpenter.sh/capacity-type`, `node.kubernetes.io/instance-type`, `nvidia.com/gpu.product`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sparsam.api import constants as c

#: KWOK manages only nodes with this annotation (see `--manage-nodes-with-annotation-selector`).
KWOK_ANNOTATION: Final = {"kwok.x-k8s.io/node": "fake"}


@dataclass(frozen=True, slots=True)
class NodeShape:
    """An instance type: its GPUs, CPUs and memory, as the cloud sells it."""

    instance_type: str
    gpu_product: str
    gpus: int
    cpu: str
    memory: str


G5_12XLARGE: Final = NodeShape("g5.12xlarge", "NVIDIA-A10G", 4, "48", "192Gi")
G6E_XLARGE: Final = NodeShape("g6e.xlarge", "NVIDIA-L40S", 1, "4", "32Gi")

#: The shapes a node can present, by instance type (`dev-cluster node add --gpu TYPE`).
SHAPES: Final = {shape.instance_type: shape for shape in (G5_12XLARGE, G6E_XLARGE)}

#: What `dev-cluster up --gpu-nodes` creates: spot capacity for training, on-demand for serving.
DEFAULT_FLEET: Final = (
    ("gpu-spot-a10g-0", G5_12XLARGE, c.CAPACITY_SPOT),
    ("gpu-spot-a10g-1", G5_12XLARGE, c.CAPACITY_SPOT),
    ("gpu-ondemand-l40s-0", G6E_XLARGE, c.CAPACITY_ON_DEMAND),
)


def gpu_taints(capacity_type: str, *, gpu: bool = True) -> list[dict[str, str]]:
    """A GPU node's taint, and a spot node's: only pods that tolerate them land there."""
    taints = [{"key": c.TAINT_GPU, "value": "present", "effect": "NoSchedule"}] if gpu else []
    if capacity_type == c.CAPACITY_SPOT:
        taints.append({"key": c.TAINT_SPOT, "value": c.CAPACITY_SPOT, "effect": "NoSchedule"})
    return taints


def gpu_labels(shape: NodeShape, capacity_type: str) -> dict[str, str]:
    """The labels a pool's node selector and sparsam's pricing read off a GPU node."""
    return {
        c.LABEL_INSTANCE_TYPE: shape.instance_type,
        c.LABEL_CAPACITY_TYPE: capacity_type,
        c.LABEL_GPU_PRODUCT: shape.gpu_product,
        c.LABEL_GPU_COUNT: str(shape.gpus),
    }


def gpu_node(
    name: str, shape: NodeShape, capacity_type: str, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The Node manifest of one fake GPU node (status included: KWOK keeps it, we set capacity)."""
    taints = gpu_taints(capacity_type)
    resources = {
        "cpu": shape.cpu,
        "memory": shape.memory,
        "pods": "110",
        c.GPU_RESOURCE: str(shape.gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": dict(KWOK_ANNOTATION),
            "labels": {
                "kubernetes.io/hostname": name,
                c.LABEL_OS: "linux",
                c.LABEL_ARCH: "amd64",
                "type": "kwok",
                **gpu_labels(shape, capacity_type),
                **(labels or {}),
            },
        },
        "spec": {"taints": taints},
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }


def default_fleet() -> list[dict[str, Any]]:
    return [gpu_node(name, shape, capacity) for name, shape, capacity in DEFAULT_FLEET]
