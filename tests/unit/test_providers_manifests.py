"""What the providers write, as pure functions: the kwok Node and the Cluster API annotations."""

from __future__ import annotations

import random
from typing import Any

import pytest

from sparsam.api import constants as c
from sparsam.api.gpunodepool import GPUNodePool
from sparsam.decisions.cluster import Pool
from sparsam.providers import clusterapi as capi
from sparsam.providers.kwok import (
    cpu_quantity,
    memory_quantity,
    node_manifest,
    node_name,
)


def _pool(**changes: Any) -> GPUNodePool:
    template: dict[str, Any] = {
        "gpuType": "NVIDIA-A10G",
        "gpusPerNode": 4,
        "cpu": "48",
        "memory": "192Gi",
        "instanceType": "g5.12xlarge",
        "labels": {"team": "ml"},
        "taints": [
            {"key": "dedicated", "value": "ml", "effect": "NoSchedule"},
            {"key": "no-value", "effect": "NoExecute"},
        ],
    }
    template.update(changes.pop("template", {}))
    spec = {
        "provider": {"kwok": {}},
        "nodeTemplate": template,
        "capacityType": "spot",
        "pricePerHour": 1.2,
        "maxNodes": 4,
        **changes,
    }
    return GPUNodePool.from_body({"metadata": {"name": "a10g-spot"}, "spec": spec})


def test_node_manifest_carries_exactly_the_pools_labels_and_taints() -> None:
    pool = _pool()
    node = node_manifest(pool, "a10g-spot-bcd42")
    planned = Pool.from_gpunodepool(pool)
    assert node["apiVersion"] == "v1"
    assert node["kind"] == "Node"
    assert node["metadata"]["name"] == "a10g-spot-bcd42"
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}
    labels = node["metadata"]["labels"]
    assert labels == {
        **planned.labels,
        "kubernetes.io/hostname": "a10g-spot-bcd42",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        c.LABEL_MANAGED_BY: "sparsam",
    }
    assert labels[c.LABEL_POOL] == "a10g-spot"
    assert labels[c.LABEL_GPU_PRODUCT] == "NVIDIA-A10G"
    assert labels[c.LABEL_CAPACITY_TYPE] == "spot"
    assert labels[c.LABEL_INSTANCE_TYPE] == "g5.12xlarge"
    assert labels["team"] == "ml"
    assert node["spec"]["taints"] == [
        {"key": c.TAINT_GPU, "value": "present", "effect": "NoSchedule"},
        {"key": c.TAINT_SPOT, "value": "spot", "effect": "NoSchedule"},
        {"key": "dedicated", "value": "ml", "effect": "NoSchedule"},
        {"key": "no-value", "effect": "NoExecute"},
    ]
    resources = {"cpu": "48", "memory": "192Gi", "pods": "110", c.GPU_RESOURCE: "4"}
    assert node["status"] == {"capacity": resources, "allocatable": resources}


def test_on_demand_node_has_no_spot_taint() -> None:
    node = node_manifest(_pool(capacityType="on-demand", template={"taints": []}), "n")
    assert node["spec"]["taints"] == [
        {"key": c.TAINT_GPU, "value": "present", "effect": "NoSchedule"}
    ]
    assert node["metadata"]["labels"][c.LABEL_CAPACITY_TYPE] == "on-demand"


@pytest.mark.parametrize(
    ("millis", "expected"),
    [
        pytest.param(48000, "48", id="whole"),
        pytest.param(500, "500m", id="milli"),
        pytest.param(1500, "1500m", id="mixed"),
    ],
)
def test_cpu_quantity(millis: int, expected: str) -> None:
    assert cpu_quantity(millis) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(192 * 2**30, "192Gi", id="gi"),
        pytest.param(512 * 2**20, "512Mi", id="mi"),
        pytest.param(3 * 2**10, "3Ki", id="ki"),
        pytest.param(16_000_000_000, "15625000Ki", id="decimal-bytes-as-ki"),
        pytest.param(1001, "1001", id="bytes"),
        pytest.param(0, "0", id="zero"),
    ],
)
def test_memory_quantity(size: int, expected: str) -> None:
    assert memory_quantity(size) == expected


def test_node_names_are_unique_reproducible_and_fit() -> None:
    # Seeded on purpose (S311): names must be reproducible here, not secret.
    names = [node_name("pool", random.Random(7)) for _ in range(2)]  # noqa: S311
    assert names[0] == names[1]  # the same seed, the same name
    rng = random.Random(7)  # noqa: S311
    many = {node_name("pool", rng) for _ in range(200)}
    assert len(many) == 200
    assert all(n.startswith("pool-") and len(n) == len("pool-") + 5 for n in many)
    assert len(node_name("p" * 253, rng)) == 253


def test_capacity_annotations() -> None:
    assert capi.capacity_annotations(_pool()) == {
        "capacity.cluster-autoscaler.kubernetes.io/cpu": "48",
        "capacity.cluster-autoscaler.kubernetes.io/memory": "192Gi",
        "capacity.cluster-autoscaler.kubernetes.io/maxPods": "110",
        "capacity.cluster-autoscaler.kubernetes.io/gpu-type": "nvidia.com/gpu",
        "capacity.cluster-autoscaler.kubernetes.io/gpu-count": "4",
        "capacity.cluster-autoscaler.kubernetes.io/labels": (
            "karpenter.sh/capacity-type=spot,"
            "kubernetes.io/arch=amd64,"
            "kubernetes.io/os=linux,"
            "node.kubernetes.io/instance-type=g5.12xlarge,"
            "nvidia.com/gpu.count=4,"
            "nvidia.com/gpu.product=NVIDIA-A10G,"
            "sparsam.dev/pool=a10g-spot,"
            "team=ml"
        ),
        "capacity.cluster-autoscaler.kubernetes.io/taints": (
            "dedicated=ml:NoSchedule,"
            "karpenter.sh/capacity-type=spot:NoSchedule,"
            "no-value:NoExecute,"
            "nvidia.com/gpu=present:NoSchedule"
        ),
    }


def test_capacity_annotations_without_gpus_or_taints() -> None:
    pool = _pool(capacityType="on-demand", template={"gpusPerNode": 0, "taints": []})
    annotations = capi.capacity_annotations(pool)
    assert capi.CAPACITY_GPU_TYPE not in annotations
    assert capi.CAPACITY_GPU_COUNT not in annotations
    assert capi.CAPACITY_TAINTS not in annotations
    assert annotations[capi.CAPACITY_CPU] == "48"
