"""Node pool providers against the real dev cluster: KWOK nodes the real scheduler uses, and Cluster
API's MachineDeployment CRD (the CRD only: what is checked is our scale calls and annotations)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, CustomObjectsApi
from tests.conftest import Cluster, Kubectl
from tests.operator_process import eventually

from sparsam.api import constants as c
from sparsam.api.gpunodepool import GPUNodePool
from sparsam.devcluster.clusterapi_crd import MACHINE_DEPLOYMENTS, MACHINES, crd_path
from sparsam.devcluster.errors import DevClusterError
from sparsam.kube.client import api_client
from sparsam.providers import clusterapi
from sparsam.providers.clusterapi import ClusterAPINodePoolProvider, capacity_annotations
from sparsam.providers.kwok import LABEL_INSUFFICIENT_CAPACITY, KwokNodePoolProvider
from sparsam.providers.nodepool import InsufficientCapacity, MaxNodesExceeded, NotFound


def _pool(name: str, provider: dict[str, Any], labels: dict[str, str] | None = None) -> GPUNodePool:
    return GPUNodePool.from_body(
        {
            "metadata": {"name": name, "uid": "u-1", "generation": 1, "labels": labels or {}},
            "spec": {
                "provider": provider,
                "nodeTemplate": {
                    "gpuType": "NVIDIA-T4",
                    "gpusPerNode": 2,
                    "cpu": "8",
                    "memory": "32Gi",
                    "labels": {"team": "ml"},
                    "taints": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}],
                },
                "capacityType": "spot",
                "pricePerHour": 0.5,
                "maxNodes": 3,
            },
        }
    )


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[ApiClient]:
    client = api_client(cluster.kubeconfig)
    yield client
    client.close()


def _node(kubectl: Kubectl, name: str) -> dict[str, Any]:
    done = kubectl("get", "node", name, "-o", "json")
    node: dict[str, Any] = json.loads(done.stdout)
    return node


def _ready_node(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    node = _node(kubectl, name)
    conditions = node.get("status", {}).get("conditions") or []
    ready = any(x["type"] == "Ready" and x["status"] == "True" for x in conditions)
    return node if ready else None


def test_kwok_nodes_come_up_take_a_pod_and_go(
    api: ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    pool = _pool(f"kwok-{uuid.uuid4().hex[:6]}", {"kwok": {}})
    provider = KwokNodePoolProvider(api)
    try:
        names = provider.scale_up(pool, 2)
        assert len(set(names)) == 2
        assert all(n.startswith(f"{pool.metadata.name}-") for n in names)
        assert provider.nodes(pool) == sorted(names)
        assert provider.size(pool) == 2

        for name in names:
            node = eventually(f"node {name} Ready", lambda n=name: _ready_node(kubectl, n), None)
            # The status we created with survived, and KWOK kept it.
            assert node["status"]["allocatable"][c.GPU_RESOURCE] == "2"
            assert node["status"]["capacity"]["memory"] == "32Gi"
            assert node["metadata"]["labels"][c.LABEL_POOL] == pool.metadata.name
            # (The node lifecycle controller may not have lifted its not-ready taint yet.)
            assert {t["key"] for t in node["spec"]["taints"]} >= {
                c.TAINT_GPU,
                c.TAINT_SPOT,
                "dedicated",
            }

        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "gpu-worker", "namespace": namespace},
            "spec": {
                "nodeSelector": {c.LABEL_POOL: pool.metadata.name},
                "tolerations": [
                    {"key": c.TAINT_GPU, "operator": "Exists", "effect": "NoSchedule"},
                    {"key": c.TAINT_SPOT, "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "dedicated", "operator": "Equal", "value": "ml"},
                ],
                "containers": [
                    {
                        "name": "main",
                        "image": "example.invalid/trainer:1",
                        "resources": {
                            "requests": {c.GPU_RESOURCE: "2", "cpu": "1", "memory": "1Gi"},
                            "limits": {c.GPU_RESOURCE: "2"},
                        },
                    }
                ],
            },
        }
        kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))

        def running() -> dict[str, Any] | None:
            done = kubectl("get", "pod", "gpu-worker", "-n", namespace, "-o", "json")
            got: dict[str, Any] = json.loads(done.stdout)
            return got if got.get("status", {}).get("phase") == "Running" else None

        placed = eventually("the pod Running", running, None)
        host = placed["spec"]["nodeName"]
        assert host in names

        kubectl("delete", "pod", "gpu-worker", "-n", namespace, "--grace-period=0", "--force")
        provider.delete_node(pool, host)
        eventually(f"node {host} gone", lambda: host not in provider.nodes(pool), None)
        with pytest.raises(NotFound):
            provider.delete_node(pool, host)  # deleting again: NotFound, success for the caller
        assert provider.size(pool) == 1
    finally:
        kubectl("delete", "nodes", "-l", f"{c.LABEL_POOL}={pool.metadata.name}", check=False)


def test_kwok_refuses_past_max_nodes_and_simulates_a_full_offering(
    api: ApiClient, kubectl: Kubectl
) -> None:
    pool = _pool(f"kwok-{uuid.uuid4().hex[:6]}", {"kwok": {}})
    full = _pool(
        f"kwok-{uuid.uuid4().hex[:6]}", {"kwok": {}}, labels={LABEL_INSUFFICIENT_CAPACITY: "true"}
    )
    provider = KwokNodePoolProvider(api)
    try:
        with pytest.raises(MaxNodesExceeded):
            provider.scale_up(pool, 4)
        with pytest.raises(InsufficientCapacity):
            provider.scale_up(full, 1)
        assert provider.size(pool) == 0
        assert provider.size(full) == 0
    finally:
        for name in (pool.metadata.name, full.metadata.name):
            kubectl("delete", "nodes", "-l", f"{c.LABEL_POOL}={name}", check=False)


@pytest.fixture(scope="module")
def capi_crds(kubectl: Kubectl) -> Iterator[None]:
    try:
        paths = [crd_path(MACHINE_DEPLOYMENTS), crd_path(MACHINES)]
    except DevClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
    names = [yaml.safe_load(path.read_text())["metadata"]["name"] for path in paths]
    # On an existing cluster that has Cluster API, leave its CRDs alone (and in place).
    ours = [name for name in names if kubectl("get", "crd", name, check=False).returncode != 0]
    for path, name in zip(paths, names, strict=True):
        if name in ours:
            kubectl("apply", "--server-side", "--field-manager=sparsam-tests", "-f", str(path))
        kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    yield
    for name in ours:
        kubectl("delete", "crd", name, "--wait=false", check=False)


def _machine_deployment(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    selector = {"cluster.x-k8s.io/cluster-name": "dev", clusterapi.LABEL_DEPLOYMENT_NAME: name}
    return {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "MachineDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "clusterName": "dev",
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "clusterName": "dev",
                    "bootstrap": {"dataSecretName": "bootstrap-data"},
                    "infrastructureRef": {
                        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                        "kind": "DockerMachineTemplate",
                        "name": name,
                    },
                },
            },
        },
    }


def test_cluster_api_scales_through_scale_and_annotates(
    api: ApiClient, kubectl: Kubectl, namespace: str, capi_crds: None
) -> None:
    md = "gpu-workers"
    kubectl("apply", "-f", "-", input=yaml.safe_dump(_machine_deployment(md, namespace, 1)))
    pool = _pool(
        "capi-pool", {"clusterAPI": {"machineDeployment": {"name": md, "namespace": namespace}}}
    )
    provider = ClusterAPINodePoolProvider(api)
    custom = CustomObjectsApi(api)

    def read() -> dict[str, Any]:
        got: dict[str, Any] = custom.get_namespaced_custom_object(
            clusterapi.GROUP, clusterapi.VERSION, namespace, "machinedeployments", md
        )
        return got

    assert provider.size(pool) == 1
    assert provider.scale_up(pool, 2) == []
    assert provider.size(pool) == 3
    got = read()
    assert got["spec"]["replicas"] == 3
    annotations = got["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith(clusterapi.CAPACITY_PREFIX)} == (
        capacity_annotations(pool)
    )
    assert annotations[clusterapi.CAPACITY_GPU_TYPE] == c.GPU_RESOURCE
    assert annotations[clusterapi.CAPACITY_GPU_COUNT] == "2"
    managers = {entry["manager"] for entry in got["metadata"]["managedFields"]}
    assert c.FIELD_MANAGER in managers

    # maxNodes is 3: the provider refuses, and changes nothing.
    with pytest.raises(MaxNodesExceeded):
        provider.scale_up(pool, 1)
    assert read()["spec"]["replicas"] == 3

    # Deleting a node: its Machine is marked, and the size drops by one, once.
    machine = {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Machine",
        "metadata": {
            "name": f"{md}-abcde",
            "namespace": namespace,
            "labels": {
                "cluster.x-k8s.io/cluster-name": "dev",
                clusterapi.LABEL_DEPLOYMENT_NAME: md,
            },
        },
        "spec": {
            "clusterName": "dev",
            "bootstrap": {"dataSecretName": "bootstrap-data"},
            "infrastructureRef": {
                "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                "kind": "DockerMachine",
                "name": f"{md}-abcde",
            },
        },
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(machine))
    status = {"status": {"nodeRef": {"apiVersion": "v1", "kind": "Node", "name": "node-abcde"}}}
    kubectl(
        "patch",
        "machine.cluster.x-k8s.io",
        f"{md}-abcde",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    with pytest.raises(NotFound):
        provider.delete_node(pool, "no-such-node")
    provider.delete_node(pool, "node-abcde")
    provider.delete_node(pool, "node-abcde")  # a retry does not remove a second node
    assert read()["spec"]["replicas"] == 2
    marked = custom.get_namespaced_custom_object(
        clusterapi.GROUP, clusterapi.VERSION, namespace, "machines", f"{md}-abcde"
    )
    assert clusterapi.ANNOTATION_DELETE_MACHINE in marked["metadata"]["annotations"]
