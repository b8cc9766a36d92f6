"""The real apiserver rejects bad GPUNodePools with a message that names the field.

Each case takes a valid manifest, breaks one field, applies it with kubectl and expects the
apiserver (OpenAPI schema or CEL rule of crds/sparsam.dev_gpunodepools.yaml) to refuse it.
GPUNodePool is cluster-scoped: objects get names unique to the test and are deleted after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from tests.manifests import DELETE, with_field

from sparsam.api.gpunodepool import GPUNodePool

if TYPE_CHECKING:
    from tests.conftest import Kubectl

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RESOURCE = "gpunodepools.sparsam.dev"


@pytest.fixture
def name(cluster_scoped_name: Callable[[str, str], str]) -> str:
    """A cluster-wide unique name for this test's pool, deleted afterwards."""
    return cluster_scoped_name(RESOURCE, "pool")


def valid(name: str) -> dict[str, Any]:
    # maxNodes 0: the pool is valid but never makes a node, so the test leaves none behind.
    return {
        "apiVersion": "sparsam.dev/v1alpha1",
        "kind": "GPUNodePool",
        "metadata": {"name": name},
        "spec": {
            "provider": {"kwok": {}},
            "nodeTemplate": {
                "instanceType": "g5.12xlarge",
                "gpuType": "NVIDIA-A10G",
                "gpusPerNode": 4,
                "cpu": "48",
                "memory": "192Gi",
                "labels": {"team": "newsroom"},
                "taints": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}],
            },
            "capacityType": "spot",
            "pricePerHour": 2.27,
            "minNodes": 0,
            "maxNodes": 0,
            "scaleDownAfter": "10m",
        },
    }


def apply(kubectl: Kubectl, manifest: dict[str, Any]) -> Any:
    return kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)


def test_valid_manifest_is_accepted_and_defaulted(kubectl: Kubectl, name: str) -> None:
    """The base of every case below is valid, so each rejection is the broken field's doing."""
    manifest = valid(name)
    del manifest["spec"]["minNodes"]
    del manifest["spec"]["scaleDownAfter"]
    apply(kubectl, manifest).check_returncode()
    body = json.loads(kubectl("get", RESOURCE, name, "-o", "json").stdout)
    assert (body["spec"]["minNodes"], body["spec"]["scaleDownAfter"]) == (0, "10m")
    assert GPUNodePool.from_body(body).spec.node_template.gpus_per_node == 4


def test_values_at_the_bounds_are_accepted_and_parse(kubectl: Kubectl, name: str) -> None:
    manifest = valid(name)
    manifest["spec"].update(pricePerHour=1000, minNodes=0, scaleDownAfter="720h")
    manifest["spec"]["nodeTemplate"].update(
        gpusPerNode=16,
        cpu=1024,
        memory="16Ti",
        labels={"example.com/team": "news-room_1.a", "a" * 63: "b" * 63, "empty": ""},
        taints=[{"key": "sparsam.dev/dedicated", "value": "", "effect": "NoSchedule"}],
    )
    apply(kubectl, manifest).check_returncode()
    body = json.loads(kubectl("get", RESOURCE, name, "-o", "json").stdout)
    pool = GPUNodePool.from_body(body)
    assert pool.spec.scale_down_after == timedelta(hours=720)
    assert pool.spec.price_per_hour == 1000


def test_examples_apply(kubectl: Kubectl, name: str) -> None:
    documents = list(yaml.safe_load_all((ROOT / "examples" / "gpunodepools.yaml").read_text()))
    assert len(documents) == 2
    for document in documents:
        # Keep the example's spec, but at most zero nodes and under this test's name.
        document["metadata"]["name"] = name
        document["spec"]["maxNodes"] = 0
        apply(kubectl, document).check_returncode()
        body = json.loads(kubectl("get", RESOURCE, name, "-o", "json").stdout)
        assert GPUNodePool.from_body(body).spec.capacity_type == document["spec"]["capacityType"]
        kubectl("delete", RESOURCE, name)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        pytest.param(
            "spec.provider",
            {"kwok": {}, "clusterAPI": {"machineDeployment": {"name": "md", "namespace": "capi"}}},
            "spec.provider must set exactly one of spec.provider.kwok or spec.provider.clusterAPI",
            id="provider-both",
        ),
        pytest.param(
            "spec.provider",
            {},
            "spec.provider must set exactly one of spec.provider.kwok or spec.provider.clusterAPI",
            id="provider-neither",
        ),
        pytest.param(
            "spec.provider",
            {"clusterAPI": {"machineDeployment": {"name": "md"}}},
            "spec.provider.clusterAPI.machineDeployment.namespace",
            id="machine-deployment-namespace-missing",
        ),
        pytest.param(
            "spec.capacityType", "preemptible", "spec.capacityType", id="capacity-unknown"
        ),
        pytest.param("spec.pricePerHour", -1, "spec.pricePerHour", id="price-negative"),
        pytest.param("spec.pricePerHour", "2.27", "spec.pricePerHour", id="price-not-number"),
        pytest.param("spec.maxNodes", DELETE, "spec.maxNodes", id="max-nodes-missing"),
        pytest.param(
            "spec.minNodes",
            1,
            "spec.minNodes must be less than or equal to spec.maxNodes",
            id="min-above-max",
        ),
        pytest.param(
            "spec.nodeTemplate.gpusPerNode", -1, "spec.nodeTemplate.gpusPerNode", id="gpus-negative"
        ),
        pytest.param(
            "spec.nodeTemplate.memory", "lots", "spec.nodeTemplate.memory", id="memory-not-quantity"
        ),
        pytest.param(
            "spec.nodeTemplate.taints",
            [{"key": "dedicated", "effect": "NoWay"}],
            "spec.nodeTemplate.taints[0].effect",
            id="taint-effect-unknown",
        ),
        pytest.param(
            "spec.scaleDownAfter",
            "10",
            "spec.scaleDownAfter must be a duration",
            id="scale-down-after-without-unit",
        ),
        # Upper bounds: counts, prices and durations (also beyond int32 and Go's range).
        pytest.param(
            "spec.maxNodes", 2**31 - 1, "spec.maxNodes: Invalid value", id="maxNodes-2**31 - 1"
        ),
        pytest.param(
            "spec.maxNodes",
            3_000_000_000,
            "spec.maxNodes: Invalid value",
            id="maxNodes-3_000_000_000",
        ),
        pytest.param("spec.minNodes", 1001, "spec.minNodes: Invalid value", id="minNodes-1001"),
        pytest.param(
            "spec.nodeTemplate.gpusPerNode",
            17,
            "spec.nodeTemplate.gpusPerNode: Invalid value",
            id="gpusPerNode-17",
        ),
        pytest.param(
            "spec.pricePerHour", 1e6, "spec.pricePerHour: Invalid value", id="pricePerHour-1e6"
        ),
        pytest.param(
            "spec.scaleDownAfter",
            "721h",
            "spec.scaleDownAfter must be at most 720h",
            id="scaleDownAfter-721h",
        ),
        pytest.param(
            "spec.scaleDownAfter",
            "999999999999h",
            "spec.scaleDownAfter must be at most 720h",
            id="scaleDownAfter-999999999999h",
        ),
        pytest.param(
            "spec.scaleDownAfter",
            "172800000s",
            "spec.scaleDownAfter must be at most 720h",
            id="scaleDownAfter-172800000s",
        ),
        # Label keys and values Kubernetes would refuse on the nodes later.
        *[
            pytest.param(
                "spec.nodeTemplate.labels",
                {key: "x"},
                "every key of spec.nodeTemplate.labels must be a label key",
                id=f"label-key-{i}",
            )
            for i, key in enumerate(
                ["bad key", "a/b/c", "-team", "x" * 64, "Example.com/team", "a" * 254 + "/team"]
            )
        ],
        pytest.param(
            "spec.nodeTemplate.labels",
            {"team": "not ok!"},
            "spec.nodeTemplate.labels.team",
            id="label-value-bad",
        ),
        pytest.param(
            "spec.nodeTemplate.labels",
            {"team": "x" * 64},
            "spec.nodeTemplate.labels.team",
            id="label-value-too-long",
        ),
        pytest.param(
            "spec.nodeTemplate.taints",
            [{"key": "a/b/c", "effect": "NoSchedule"}],
            "spec.nodeTemplate.taints[].key must be a label key",
            id="taint-key-bad",
        ),
        pytest.param(
            "spec.nodeTemplate.taints",
            [{"key": "dedicated", "value": "not ok!", "effect": "NoSchedule"}],
            "spec.nodeTemplate.taints[0].value",
            id="taint-value-bad",
        ),
        pytest.param(
            "spec.nodeTemplate.cpu",
            "1025",
            "spec.nodeTemplate.cpu must be at most 1024",
            id="cpu-1025",
        ),
        pytest.param(
            "spec.nodeTemplate.cpu",
            99999999999999,
            "spec.nodeTemplate.cpu must be at most 1024",
            id="cpu-99999999999999",
        ),
        pytest.param(
            "spec.nodeTemplate.memory",
            "17Ti",
            "spec.nodeTemplate.memory must be at most 16Ti",
            id="memory-17Ti",
        ),
        pytest.param(
            "spec.nodeTemplate.memory",
            "9999999999999999999Ei",
            "spec.nodeTemplate.memory must be at most 16Ti",
            id="memory-9999999999999999999Ei",
        ),
    ],
)
def test_bad_input_is_rejected_naming_the_field(
    kubectl: Kubectl, name: str, path: str, value: Any, expected: str
) -> None:
    result = apply(kubectl, with_field(valid(name), path, value))
    assert result.returncode != 0, f"the apiserver accepted {path}={value!r}"
    assert expected in result.stderr


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        pytest.param(
            "spec.nodeTemplate.gpuType",
            "NVIDIA-L40S",
            "spec.nodeTemplate.gpuType is immutable",
            id="gpu-type",
        ),
        pytest.param(
            "spec.capacityType", "on-demand", "spec.capacityType is immutable", id="capacity-type"
        ),
    ],
)
def test_immutable_fields_cannot_change(
    kubectl: Kubectl, name: str, path: str, value: Any, expected: str
) -> None:
    apply(kubectl, valid(name)).check_returncode()
    result = apply(kubectl, with_field(valid(name), path, value))
    assert result.returncode != 0, f"the apiserver accepted a change of {path}"
    assert expected in result.stderr
    # Other fields stay mutable.
    apply(kubectl, with_field(valid(name), "spec.pricePerHour", 2.5)).check_returncode()
