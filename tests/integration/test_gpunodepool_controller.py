"""The GPUNodePool controller on the real dev cluster: `sparsam run` as its own process, real
kube-scheduler and controller-manager, KWOK nodes.

Every test uses a GPU type of its own (pods select it with nodeSelector), so the dev cluster's
static GPU fleet and the other tests' pools never take its pods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import Kubectl
from tests.operator_process import (
    Operator,
    apply,
    eventually,
    get,
    object_events,
    pool,
    pool_nodes,
    running_pods,
)

DRAINING = "sparsam.dev/draining"
INTERRUPTION_TAINT = "aws-node-termination-handler/spot-itn"


def deployment(namespace: str, gpu_type: str, replicas: int, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "train", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "train"}},
            "template": {
                "metadata": {"labels": {"app": "train"}},
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.product": gpu_type},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {
                            "key": "karpenter.sh/capacity-type",
                            "operator": "Exists",
                            "effect": "NoSchedule",
                        },
                    ],
                    "containers": [
                        {
                            "name": "worker",
                            "image": "ghcr.io/sparsam/sparsam-trainer:0.1.0",
                            "resources": {
                                "requests": {"nvidia.com/gpu": str(gpus), "cpu": "2"},
                                "limits": {"nvidia.com/gpu": str(gpus)},
                            },
                        }
                    ],
                },
            },
        },
    }


def test_pending_gpu_pods_scale_the_pool_up_and_it_returns_to_zero(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
) -> None:
    name = cluster_scoped_name("gpunodepool", "spot")
    apply(kubectl, pool(name, gpu_type, "spot"))
    apply(kubectl, deployment(namespace, gpu_type, replicas=3, gpus=2))

    # 3 pods x 2 GPUs on 4-GPU nodes: two nodes, and the real scheduler places all three.
    placed = eventually(
        "three pods running on the pool's nodes",
        lambda: (pods := running_pods(kubectl, namespace)) and len(pods) == 3 and pods,
        operator,
    )
    nodes = {n["metadata"]["name"] for n in pool_nodes(kubectl, name)}
    assert set(placed.values()) <= nodes
    assert len(nodes) == 2
    status = eventually(
        "pool status with the allocated GPUs",
        lambda: (
            (s := get(kubectl, "gpunodepool", name).get("status", {}))
            and s.get("allocatedGPUs") == 6
            and s
        ),
        operator,
    )
    assert status["nodes"] == 2 and status["utilization"] == 0.75
    assert status["lastAction"]["type"] == "ScaleUp"

    kubectl("delete", "deployment", "train", "-n", namespace)
    eventually("the pool down to zero nodes", lambda: not pool_nodes(kubectl, name), operator)
    status = eventually(
        "status saying zero nodes",
        lambda: (s := get(kubectl, "gpunodepool", name)["status"])["nodes"] == 0 and s,
        operator,
    )
    assert status["lastAction"]["type"] == "ScaleDown"
    assert "empty for 5s" in status["lastAction"]["reason"]


def test_spot_without_capacity_falls_back_to_on_demand(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
) -> None:
    spot = cluster_scoped_name("gpunodepool", "spot")
    on_demand = cluster_scoped_name("gpunodepool", "od")
    apply(
        kubectl,
        pool(spot, gpu_type, "spot", labels={"kwok.sparsam.dev/insufficient-capacity": "true"}),
        pool(on_demand, gpu_type, "on-demand"),
    )
    apply(kubectl, deployment(namespace, gpu_type, replicas=1, gpus=4))

    placed = eventually(
        "the pod running", lambda: running_pods(kubectl, namespace), operator, timeout=120
    )
    (node,) = placed.values()
    labels = get(kubectl, "node", node)["metadata"]["labels"]
    assert labels["sparsam.dev/pool"] == on_demand
    assert labels["karpenter.sh/capacity-type"] == "on-demand"
    assert not pool_nodes(kubectl, spot)
    ready = next(
        c for c in get(kubectl, "gpunodepool", spot)["status"]["conditions"] if c["type"] == "Ready"
    )
    assert ready["status"] == "False" and ready["reason"] == "InsufficientCapacity"
    assert any(e.startswith("InsufficientCapacity") for e in object_events(kubectl, spot))


def test_interruption_taint_cordons_drains_and_replaces_the_node(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
) -> None:
    name = cluster_scoped_name("gpunodepool", "spot")
    apply(kubectl, pool(name, gpu_type, "spot", scaleDownAfter="10m"))
    apply(kubectl, deployment(namespace, gpu_type, replicas=1, gpus=4))
    (doomed,) = eventually(
        "the pod running", lambda: running_pods(kubectl, namespace), operator
    ).values()

    kubectl("taint", "node", doomed, f"{INTERRUPTION_TAINT}=true:NoSchedule")

    def replaced() -> str | None:
        pods = running_pods(kubectl, namespace)
        nodes = {n["metadata"]["name"] for n in pool_nodes(kubectl, name)}
        if doomed in nodes or len(pods) != 1:
            return None
        (node,) = pods.values()
        return node if node in nodes else None

    replacement = eventually("the pod running on a replacement node", replaced, operator)
    assert replacement != doomed
    events = object_events(kubectl, name)
    assert any(e == f"Cordoned: node {doomed}: Interruption" for e in events), events
    assert any(INTERRUPTION_TAINT in e for e in events if e.startswith("ScaleDown")), events


def test_a_restart_mid_drain_leaves_no_stuck_cordon(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
) -> None:
    """The operator is killed while a node carries its drain cordon, and the node is then
    needed (a pod runs there). The restarted operator, with nothing in memory, sees its own
    annotation on a node the plan keeps and lifts the cordon. The crash is made by SIGKILL;
    the cordon is written as the operator's drain writes it, because catching a real drain
    between its cordon and its evictions is a race no test can win reliably."""
    name = cluster_scoped_name("gpunodepool", "spot")
    apply(kubectl, pool(name, gpu_type, "spot", scaleDownAfter="10m"))
    apply(kubectl, deployment(namespace, gpu_type, replicas=1, gpus=2))
    (node,) = eventually(
        "the pod running", lambda: running_pods(kubectl, namespace), operator
    ).values()

    operator.kill()
    try:
        kubectl("annotate", "node", node, f"{DRAINING}=ScaleDown")
        kubectl("cordon", node)
    finally:
        operator.start()

    def uncordoned() -> bool:
        found = get(kubectl, "node", node)
        return not found["spec"].get("unschedulable") and DRAINING not in (
            found["metadata"].get("annotations") or {}
        )

    eventually("the cordon lifted", uncordoned, operator)
    assert list(running_pods(kubectl, namespace).values()) == [node]
    assert f"Uncordoned: node {node} is needed again" in object_events(kubectl, name)


def test_deleting_a_pool_takes_its_nodes_with_it(
    kubectl: Kubectl,
    operator: Operator,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
) -> None:
    name = cluster_scoped_name("gpunodepool", "kept")
    apply(kubectl, pool(name, gpu_type, "on-demand", minNodes=1))
    eventually("the minNodes node", lambda: pool_nodes(kubectl, name), operator)

    # Well within Kopf's default 60 s wait for a busy timer to exit (main.settings).
    kubectl("delete", "gpunodepool", name, "--timeout=30s")
    assert not pool_nodes(kubectl, name)


def test_a_pod_stuck_on_a_missing_claim_gets_no_node(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
) -> None:
    name = cluster_scoped_name("gpunodepool", "spot")
    apply(kubectl, pool(name, gpu_type, "spot"))
    stuck = deployment(namespace, gpu_type, replicas=1, gpus=4)
    stuck["metadata"]["name"] = "stuck"
    stuck["spec"]["selector"]["matchLabels"] = {"app": "stuck"}
    template = stuck["spec"]["template"]
    template["metadata"]["labels"] = {"app": "stuck"}
    template["spec"]["volumes"] = [
        {"name": "weights", "persistentVolumeClaim": {"claimName": "weights"}}
    ]
    apply(kubectl, stuck)

    def verdict() -> str | None:
        for pod in get(kubectl, "pods", "-n", namespace, "-l", "app=stuck")["items"]:
            for cond in pod["status"].get("conditions") or ():
                if cond["type"] == "PodScheduled" and "weights" in cond.get("message", ""):
                    return str(cond["message"])
        return None

    # The real scheduler's verdict: no node, old or new, lets it run.
    assert 'persistentvolumeclaim "weights" not found' in eventually(
        "the scheduler's verdict on the stuck pod", verdict, operator
    )
    # A pod that waits for room now: the pool adds one 4-GPU node, for it alone (the stuck
    # pod, as large, would have made it two).
    apply(kubectl, deployment(namespace, gpu_type, replicas=1, gpus=4))
    placed = eventually(
        "the other pod running",
        lambda: (pods := running_pods(kubectl, namespace)) and pods,
        operator,
    )
    assert list(placed) and all(p.startswith("train-") for p in placed)
    assert len(pool_nodes(kubectl, name)) == 1
    status = get(kubectl, "gpunodepool", name)["status"]
    assert "1 pending pod (4 GPUs)" in status["lastAction"]["reason"]
    # Without it, the node goes once empty (scaleDownAfter 5s); the stuck pod keeps none.
    kubectl("delete", "deployment", "train", "-n", namespace)
    eventually("the pool down to zero nodes", lambda: not pool_nodes(kubectl, name), operator)
    assert not running_pods(kubectl, namespace)
