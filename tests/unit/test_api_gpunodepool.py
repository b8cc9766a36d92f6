"""GPUNodePool model: the examples parse, defaults match the CRD, bad input names its field."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.manifests import DELETE, with_field

from sparsam.api.gpunodepool import (
    ClusterAPIProvider,
    GPUNodePool,
    GPUNodePoolSpec,
    KwokProvider,
    LastAction,
    MachineDeploymentRef,
    NodeTemplate,
    Provider,
    Taint,
)
from sparsam.api.parse import InvalidSpec, Quantity

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "gpunodepools.yaml"

MINIMAL: dict[str, Any] = {
    "apiVersion": "sparsam.dev/v1alpha1",
    "kind": "GPUNodePool",
    "metadata": {"name": "pool", "uid": "u-1", "generation": 3},
    "spec": {
        "provider": {"kwok": {}},
        "nodeTemplate": {"gpuType": "NVIDIA-T4", "gpusPerNode": 1, "cpu": 4, "memory": "16Gi"},
        "capacityType": "spot",
        "pricePerHour": 0.2,
        "maxNodes": 3,
    },
}


def _examples() -> dict[str, GPUNodePool]:
    pools = [GPUNodePool.from_body(doc) for doc in yaml.safe_load_all(EXAMPLES.read_text())]
    return {pool.metadata.name: pool for pool in pools}


def test_examples_are_one_spot_and_one_on_demand_pool() -> None:
    pools = _examples()
    assert {name: pool.spec.capacity_type for name, pool in pools.items()} == {
        "a10g-spot": "spot",
        "l40s-on-demand": "on-demand",
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            "a10g-spot",
            GPUNodePoolSpec(
                provider=Provider(kwok=KwokProvider()),
                node_template=NodeTemplate(
                    gpu_type="NVIDIA-A10G",
                    gpus_per_node=4,
                    cpu=Quantity(48),
                    memory=Quantity(192 * 2**30),
                    instance_type="g5.12xlarge",
                    labels={"topology.kubernetes.io/zone": "us-east-1a"},
                ),
                capacity_type="spot",
                price_per_hour=2.27,
                max_nodes=4,
                min_nodes=0,
                scale_down_after=timedelta(minutes=10),
            ),
            id="spot",
        ),
        pytest.param(
            "l40s-on-demand",
            GPUNodePoolSpec(
                provider=Provider(kwok=KwokProvider()),
                node_template=NodeTemplate(
                    gpu_type="NVIDIA-L40S",
                    gpus_per_node=1,
                    cpu=Quantity(4),
                    memory=Quantity(32 * 2**30),
                    instance_type="g6e.xlarge",
                ),
                capacity_type="on-demand",
                price_per_hour=1.861,
                max_nodes=2,
                min_nodes=0,
                scale_down_after=timedelta(minutes=5),
            ),
            id="on-demand",
        ),
    ],
)
def test_example_parses(name: str, expected: GPUNodePoolSpec) -> None:
    assert _examples()[name].spec == expected


def test_minimal_body_gets_the_crd_defaults() -> None:
    pool = GPUNodePool.from_body(MINIMAL)
    assert (pool.metadata.name, pool.metadata.uid, pool.metadata.generation) == ("pool", "u-1", 3)
    assert pool.spec.min_nodes == 0
    assert pool.spec.scale_down_after == timedelta(minutes=10)
    assert pool.spec.node_template.cpu == Quantity(4)
    assert pool.spec.node_template.taints is None
    assert pool.spec.provider.cluster_api is None


def test_cluster_api_taints_and_status_parse() -> None:
    body = copy.deepcopy(MINIMAL)
    body["spec"]["provider"] = {
        "clusterAPI": {"machineDeployment": {"name": "md", "namespace": "c"}}
    }
    body["spec"]["nodeTemplate"]["taints"] = [{"key": "dedicated", "effect": "NoSchedule"}]
    body["status"] = {
        "nodes": 2,
        "allocatedGPUs": 1,
        "utilization": 0.5,
        "lastAction": {
            "type": "ScaleUp",
            "reason": "1 pending pod",
            "time": "2025-01-01T00:00:00Z",
        },
    }
    pool = GPUNodePool.from_body(body)
    assert pool.spec.provider == Provider(
        cluster_api=ClusterAPIProvider(MachineDeploymentRef(name="md", namespace="c"))
    )
    assert pool.spec.node_template.taints == (Taint(key="dedicated", effect="NoSchedule"),)
    assert pool.status.allocated_gpus == 1
    assert pool.status.last_action == LastAction(
        type="ScaleUp", reason="1 pending pod", time="2025-01-01T00:00:00Z"
    )


@pytest.mark.parametrize(
    ("path", "value", "expected_path"),
    [
        pytest.param("spec.provider", None, "spec.provider", id="provider-missing"),
        pytest.param(
            "spec.capacityType", "preemptible", "spec.capacityType", id="capacity-unknown"
        ),
        pytest.param("spec.pricePerHour", "2.27", "spec.pricePerHour", id="price-not-number"),
        pytest.param("spec.maxNodes", None, "spec.maxNodes", id="max-nodes-missing"),
        pytest.param(
            "spec.nodeTemplate.gpuType", None, "spec.nodeTemplate.gpuType", id="gpu-type-missing"
        ),
        pytest.param(
            "spec.nodeTemplate.memory", "lots", "spec.nodeTemplate.memory", id="memory-not-quantity"
        ),
        pytest.param(
            "spec.nodeTemplate.taints",
            [{"key": "k", "effect": "NoWay"}],
            "spec.nodeTemplate.taints[0].effect",
            id="taint-effect-unknown",
        ),
        pytest.param(
            "spec.scaleDownAfter", "10", "spec.scaleDownAfter", id="scale-down-not-duration"
        ),
        pytest.param(
            "spec.scaleDownAfter",
            "999999999999h",
            "spec.scaleDownAfter",
            id="scale-down-beyond-bound",
        ),
        pytest.param("spec.maxNodes", 2**31 - 1, "spec.maxNodes", id="max-nodes-huge"),
        pytest.param("spec.pricePerHour", 1e6, "spec.pricePerHour", id="price-huge"),
        pytest.param(
            "spec.provider.clusterAPI",
            {"machineDeployment": {"name": "md"}},
            "spec.provider.clusterAPI.machineDeployment.namespace",
            id="machine-deployment-namespace-missing",
        ),
    ],
)
def test_invalid_body_names_the_field(path: str, value: Any, expected_path: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        GPUNodePool.from_body(with_field(MINIMAL, path, DELETE if value is None else value))
    assert caught.value.path == expected_path
