"""Faults that the operator and the activator must ride out, on the real dev cluster:

1. the kube-apiserver is SIGKILLed (its supervisor starts it again) while both run: neither
   restarts, a TrainingJob created afterwards gets its workers and an InferenceService at zero
   still wakes on a request;
2. a namespace with running TrainingJobs and InferenceServices is deleted: it goes away (our
   finalizers are released), the pool's nodes are given back, and the operator logs no
   traceback;
3. a TrainingJob is deleted while its compress pod runs: the pod and all the job owns go, and
   nothing is deployed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.activator_process import ActivatorProcess, activator_process
from tests.conftest import Cluster, Kubectl
from tests.integration.test_trainingjob_controller import (
    exit_worker,
    running,
    small_pool,
    status,
)
from tests.operator_process import (
    Operator,
    apply,
    eventually,
    get,
    pool_nodes,
    trainingjob,
)

from sparsam.api import constants as c
from sparsam.demo.hostpods import host_volume

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def front(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActivatorProcess]:
    log = tmp_path_factory.mktemp("activator") / "activator.log"
    with activator_process(
        log, "--kubeconfig", str(cluster.kubeconfig), "--hold-timeout", "90", ready_path="/-/readyz"
    ) as process:
        yield process


@pytest.fixture
def spot_pool(
    kubectl: Kubectl,
    operator: Operator,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
) -> str:
    name = cluster_scoped_name("gpunodepool", "spot")
    body = small_pool(name, gpu_type)
    body["spec"]["scaleDownAfter"] = "5s"
    apply(kubectl, body)
    return name


def inference_service(namespace: str, name: str, gpu_type: str) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": f"pvc://models/{name}"},
            "resources": {"gpus": 1, "gpuType": gpu_type, "cpu": "100m", "memory": "256Mi"},
            "replicas": {"min": 0, "max": 1},
        },
    }


def deployment_replicas(kubectl: Kubectl, namespace: str, name: str) -> int:
    found = kubectl("get", "deployment", name, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return -1
    return int(json.loads(found.stdout)["spec"]["replicas"])


def kill_apiserver(cluster: Cluster, kubectl: Kubectl) -> None:
    """SIGKILL the apiserver (not its supervisor) and wait until the new one answers."""
    dev = cluster.dev
    assert dev is not None
    state = dev.state()
    assert state is not None
    (apiserver,) = [p for p in state.processes if p.name == "kube-apiserver"]
    before = dev.supervision(apiserver)
    assert before is not None and before.pid is not None
    os.kill(before.pid, signal.SIGKILL)

    def back() -> bool:
        now = dev.supervision(apiserver)
        return now is not None and now.pid not in (None, before.pid)

    eventually("the apiserver restarted by its supervisor", back, None, timeout=60)
    eventually(
        "the apiserver answers",
        lambda: kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
        None,
        timeout=60,
    )


def test_an_apiserver_restart_is_ridden_out_by_the_operator_and_the_activator(
    cluster: Cluster,
    kubectl: Kubectl,
    operator: Operator,
    front: ActivatorProcess,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    if cluster.dev is None:
        pytest.skip("runs against an existing cluster (SPARSAM_TEST_KUBECONFIG): no apiserver")
    apply(kubectl, inference_service(namespace, "cold", gpu_type))
    eventually(
        "the service at zero",
        lambda: (
            get(kubectl, "inferenceservice", "cold", "-n", namespace).get("status", {}).get("phase")
            == "ScaledToZero"
        ),
        operator,
    )
    assert operator.process is not None
    operator_pid, activator_pid = operator.process.pid, front.process.pid

    kill_apiserver(cluster, kubectl)

    # The operator's watches come back: a job made now gets its workers.
    apply(kubectl, trainingjob("tj", namespace, gpu_type))
    eventually("two workers running", lambda: len(running(kubectl, namespace)) == 2, operator)

    # The activator's watch comes back: a request at zero is held and wakes the service, and
    # the operator scales it up.
    labels = f'{{inference_service="cold",namespace="{namespace}"}}'
    eventually(
        "the activator knows the service",
        lambda: front.metric(f"sparsam_activator_requests_total{labels}") == 0,
        operator,
        timeout=60,
    )

    def request() -> None:
        # Held until a replica listens, which none does here (KWOK): the wake is what counts.
        with contextlib.suppress(OSError):
            front.get(f"/{namespace}/cold/v1/predict", 5)

    held = threading.Thread(target=request)
    held.start()
    try:
        eventually(
            "the wake annotation",
            lambda: (
                c.ANNOTATION_WAKE_REQUESTED
                in (
                    get(kubectl, "inferenceservice", "cold", "-n", namespace)["metadata"].get(
                        "annotations"
                    )
                    or {}
                )
            ),
            operator,
            timeout=30,
        )
        eventually(
            "a replica asked for",
            lambda: deployment_replicas(kubectl, namespace, "cold") >= 1,
            operator,
            timeout=60,
        )
    finally:
        held.join(10)

    # Neither restarted to get there.
    assert operator.process.poll() is None and operator.process.pid == operator_pid
    assert front.process.poll() is None and front.process.pid == activator_pid


def test_deleting_a_namespace_with_running_jobs_and_services_leaves_nothing(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    log_start = operator.log.stat().st_size
    apply(kubectl, trainingjob("tj", namespace, gpu_type))
    apply(kubectl, trainingjob("tj2", namespace, gpu_type, workers={"min": 1, "max": 1}))
    apply(kubectl, inference_service(namespace, "served", gpu_type))
    body = inference_service(namespace, "warm", gpu_type)
    body["spec"]["replicas"] = {"min": 1, "max": 1}
    apply(kubectl, body)
    eventually("three workers running", lambda: len(running(kubectl, namespace)) == 3, operator)
    eventually(
        "the warm service's replica asked for",
        lambda: deployment_replicas(kubectl, namespace, "warm") == 1,
        operator,
    )

    kubectl("delete", "namespace", namespace, "--wait=false")
    eventually(
        "the namespace gone",
        lambda: kubectl("get", "namespace", namespace, check=False).returncode != 0,
        operator,
        timeout=120,
    )
    # Cluster-scoped state: the pool's nodes were the jobs' only, so they are given back.
    eventually("the pool's nodes gone", lambda: not pool_nodes(kubectl, spot_pool), operator)
    time.sleep(2)  # a pass or two after the deletion, to catch a traceback it logs
    logged = operator.log.read_text(errors="replace")[log_start:]
    assert "Traceback" not in logged, logged[-4000:]


def test_a_job_deleted_while_it_compresses_leaves_nothing_and_deploys_nothing(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    volume, claim = host_volume(namespace, "ckpt", "ReadWriteMany")
    apply(kubectl, volume, claim)
    spec = {
        "workers": {"min": 1, "max": 1},
        "checkpoint": {"volumeClaim": "ckpt", "path": "/ckpt"},
        "compression": {"quantization": {"mode": "dynamic"}, "maxAccuracyDrop": 0.02},
        "deploy": {"inferenceService": "digits", "minReplicas": 0, "maxReplicas": 2},
    }
    apply(kubectl, trainingjob("tj", namespace, gpu_type, **spec))
    eventually("the worker running", lambda: running(kubectl, namespace), operator)
    exit_worker(kubectl, namespace, "tj-worker-0", 0)

    def compress_pod() -> bool:
        found = get(kubectl, "pods", "-n", namespace, "-l", f"{c.LABEL_ROLE}={c.ROLE_COMPRESS}")
        return any(p["status"].get("phase") == "Running" for p in found["items"])

    eventually("the compress pod running", compress_pod, operator)
    assert status(kubectl, namespace).get("phase") == "Compressing"

    kubectl("delete", "trainingjob", "tj", "-n", namespace, "--timeout=60s")
    eventually(
        "every pod of the job gone",
        lambda: not get(kubectl, "pods", "-n", namespace, "-l", f"{c.LABEL_JOB}=tj")["items"],
        operator,
    )
    eventually(
        "the job's Service gone",
        lambda: (
            not [
                s
                for s in get(kubectl, "services", "-n", namespace)["items"]
                if any(o.get("name") == "tj" for o in s["metadata"].get("ownerReferences", []))
            ]
        ),
        operator,
    )
    time.sleep(3)  # passes that would still act on the job have had their turn
    assert not get(kubectl, "inferenceservices", "-n", namespace)["items"]
    assert not get(kubectl, "pods", "-n", namespace)["items"]
