"""The TrainingJob controller on the real dev cluster, with the GPUNodePool controller beside
it in the same `sparsam run`: workers are created and scheduled on nodes the pool adds, a
preempted worker is replaced and counted, program failures count against backoffLimit, the
/scale subresource sets the worker count, and the run policy (suspend and resume,
activeDeadlineSeconds, ttlSecondsAfterFinished) does what it says.

Pods on KWOK nodes run no containers, so a worker's exit is written into its status the way
the kubelet would (`kubectl patch --subresource=status`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.conftest import Kubectl
from tests.operator_process import (
    Operator,
    apply,
    eventually,
    get,
    object_events,
    pool,
    trainingjob,
)

from sparsam.api import constants as c
from sparsam.demo.hostpods import host_volume


def small_pool(name: str, gpu_type: str) -> dict[str, Any]:
    body = pool(name, gpu_type, "spot", scaleDownAfter="30s")
    body["spec"]["nodeTemplate"]["gpusPerNode"] = 1
    return body


@pytest.fixture
def spot_pool(
    kubectl: Kubectl,
    operator: Operator,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
) -> str:
    """A spot GPUNodePool of 1-GPU nodes of this test's GPU type, applied once the operator
    runs; its name."""
    name = cluster_scoped_name("gpunodepool", "spot")
    apply(kubectl, small_pool(name, gpu_type))
    return name


def status(kubectl: Kubectl, namespace: str, name: str = "tj") -> dict[str, Any]:
    found: dict[str, Any] = get(kubectl, "trainingjob", name, "-n", namespace).get("status", {})
    return found


def phase(kubectl: Kubectl, namespace: str, wanted: str, operator: Operator) -> dict[str, Any]:
    """Job tj's status once its phase is `wanted`."""
    found: dict[str, Any] = eventually(
        f"the job {wanted}",
        lambda: (s := status(kubectl, namespace)).get("phase") == wanted and s,
        operator,
    )
    return found


def ready(found: dict[str, Any]) -> tuple[str, str, str]:
    """The status, reason and message of a job status's Ready condition."""
    condition = next(c for c in found["conditions"] if c["type"] == "Ready")
    return condition["status"], condition["reason"], condition.get("message", "")


def workers(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    """Worker pods that are not on their way out, by name."""
    pods = get(kubectl, "pods", "-n", namespace, "-l", "sparsam.dev/role=worker")["items"]
    return {p["metadata"]["name"]: p for p in pods if not p["metadata"].get("deletionTimestamp")}


def running(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    return {
        name: p["spec"]["nodeName"]
        for name, p in workers(kubectl, namespace).items()
        if p["status"].get("phase") == "Running"
    }


def exit_worker(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    code: int,
    message: str | None = None,
    container: str = "trainer",
) -> None:
    """What the kubelet reports when the pod's container exits `code` (KWOK runs nothing)."""
    state: dict[str, Any] = {
        "terminated": {"exitCode": code, "reason": "Error" if code else "Completed"}
    }
    if message is not None:
        state["terminated"]["message"] = message
    phase = "Succeeded" if code == 0 else "Failed"
    patch = {
        "status": {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": container,
                    "image": "ghcr.io/sparsam/sparsam-trainer:0.1.0",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }
    }
    kubectl(
        "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(patch),
    )  # fmt: skip


def test_workers_start_on_capacity_the_pool_adds(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    apply(kubectl, trainingjob("tj", namespace, gpu_type))

    placed = eventually(
        "two workers running", lambda: len(r := running(kubectl, namespace)) == 2 and r, operator
    )
    assert set(placed) == {"tj-worker-0", "tj-worker-1"}
    current = phase(kubectl, namespace, "Running", operator)
    assert current["workers"] == {"desired": 2, "running": 2}
    assert current["selector"] == "sparsam.dev/job=tj,sparsam.dev/role=worker"
    assert ready(current)[0] == "True"

    pod = workers(kubectl, namespace)["tj-worker-0"]
    assert pod["metadata"]["labels"]["team"] == "vision"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
    assert pod["spec"]["containers"][0]["command"][:2] == ["torchrun", "--nnodes=1:2"]
    service = get(kubectl, "service", "tj", "-n", namespace)
    assert service["spec"]["clusterIP"] == "None"

    # kubectl scale goes through the /scale subresource, reading status.selector.
    kubectl("scale", "trainingjob", "tj", "-n", namespace, "--replicas=1")
    eventually(
        "one worker left", lambda: set(workers(kubectl, namespace)) == {"tj-worker-0"}, operator
    )
    assert status(kubectl, namespace)["preemptions"] == 0  # a scale-down is not a preemption

    # No finalizer: the passes run from a work queue, not from a Kopf timer per job. One an
    # older version put on a job goes at the operator's first look, so deleting it never waits.
    assert "finalizers" not in get(kubectl, "trainingjob", "tj", "-n", namespace)["metadata"]
    old = trainingjob("old", namespace, gpu_type, runPolicy={"suspend": True})
    old["metadata"]["finalizers"] = [c.FINALIZER]
    apply(kubectl, old)
    eventually(
        "the older version's finalizer gone",
        lambda: "finalizers" not in get(kubectl, "trainingjob", "old", "-n", namespace)["metadata"],
        operator,
    )


def test_a_preempted_worker_is_replaced_and_counted_and_failures_count_restarts(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    apply(kubectl, trainingjob("tj", namespace, gpu_type, runPolicy={"backoffLimit": 1}))
    placed = eventually(
        "two workers running", lambda: len(r := running(kubectl, namespace)) == 2 and r, operator
    )

    doomed = placed["tj-worker-1"]
    kubectl("taint", "node", doomed, "aws-node-termination-handler/spot-itn=true:NoSchedule")
    replaced = eventually(
        "worker 1 running again on another node",
        lambda: (
            (node := running(kubectl, namespace).get("tj-worker-1")) not in (None, doomed) and node
        ),
        operator,
    )
    assert replaced != doomed
    assert status(kubectl, namespace)["preemptions"] == 1
    assert any(e.startswith("WorkerPreempted: tj-worker-1") for e in object_events(kubectl, "tj"))

    # Evicted by someone else (kubectl drain): counted once its pod is gone, and replaced
    # after that count is written, never before it.
    old = workers(kubectl, namespace)["tj-worker-1"]["metadata"]["uid"]
    eventually(
        "worker 1 in status.workerPods, where a vanished worker is found",
        lambda: old in {ref["uid"] for ref in status(kubectl, namespace).get("workerPods", [])},
        operator,
    )
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "tj-worker-1", "namespace": namespace},
    }
    path = f"/api/v1/namespaces/{namespace}/pods/tj-worker-1/eviction"
    kubectl("create", "--raw", path, "-f", "-", input=json.dumps(eviction))
    eventually(
        "worker 1 replaced and running",
        lambda: (
            (pod := workers(kubectl, namespace).get("tj-worker-1")) is not None
            and pod["metadata"]["uid"] != old
            and pod["status"].get("phase") == "Running"
        ),
        operator,
    )
    assert status(kubectl, namespace)["preemptions"] == 2
    said = get(kubectl, "events", "-n", namespace, "--field-selector", "reason=WorkerPreempted")
    assert any("was deleted (evicted" in e["message"] for e in said["items"])

    # The trainer's "preempted, resumable" exit is a preemption, not a failure.
    exit_worker(kubectl, namespace, "tj-worker-0", 75)
    eventually("3 preemptions", lambda: status(kubectl, namespace)["preemptions"] == 3, operator)
    assert status(kubectl, namespace)["restarts"] == 0

    # Program failures count: one is within backoffLimit 1, the second fails the job.
    eventually("worker 0 back", lambda: "tj-worker-0" in running(kubectl, namespace), operator)
    exit_worker(kubectl, namespace, "tj-worker-0", 1)
    eventually("1 restart", lambda: status(kubectl, namespace)["restarts"] == 1, operator)
    assert status(kubectl, namespace)["phase"] in ("Running", "Pending")
    eventually("worker 0 back", lambda: "tj-worker-0" in running(kubectl, namespace), operator)
    exit_worker(kubectl, namespace, "tj-worker-0", 1)
    final = phase(kubectl, namespace, "Failed", operator)
    assert ready(final)[:2] == ("False", "BackoffLimitExceeded")
    eventually("no workers left", lambda: not workers(kubectl, namespace), operator)


def test_a_worker_that_exits_0_finishes_the_job(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    apply(kubectl, trainingjob("tj", namespace, gpu_type, workers={"min": 1, "max": 1}))
    eventually("the worker running", lambda: running(kubectl, namespace), operator)
    exit_worker(kubectl, namespace, "tj-worker-0", 0)
    final = phase(kubectl, namespace, "Succeeded", operator)
    assert final["completionTime"] >= final["startTime"]


def test_suspend_removes_the_workers_and_resume_brings_them_back_uncounted(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    apply(kubectl, trainingjob("tj", namespace, gpu_type))
    eventually("two workers running", lambda: len(running(kubectl, namespace)) == 2, operator)

    suspend = json.dumps({"spec": {"runPolicy": {"suspend": True}}})
    kubectl("patch", "trainingjob", "tj", "-n", namespace, "--type=merge", "-p", suspend)
    suspended = phase(kubectl, namespace, "Suspended", operator)
    assert ready(suspended)[:2] == ("False", "Suspended")
    assert "startTime" not in suspended  # as a Job's, the deadline starts again on resume
    eventually("no workers left", lambda: not workers(kubectl, namespace), operator)

    resume = json.dumps({"spec": {"runPolicy": {"suspend": False}}})
    kubectl("patch", "trainingjob", "tj", "-n", namespace, "--type=merge", "-p", resume)
    resumed = eventually(
        "the job running again on two workers",
        lambda: (
            (s := status(kubectl, namespace)).get("phase") == "Running"
            and len(running(kubectl, namespace)) == 2
            and s
        ),
        operator,
    )
    assert resumed["startTime"]
    # Workers removed by a suspend are neither preemptions nor failures.
    assert (resumed["preemptions"], resumed["restarts"]) == (0, 0)


def test_active_deadline_fails_the_job_counted_from_its_workers_start(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    apply(kubectl, trainingjob("tj", namespace, gpu_type, runPolicy={"activeDeadlineSeconds": 4}))
    started = eventually(
        "the workers' containers started",
        lambda: sorted(
            state["running"]["startedAt"]
            for pod in workers(kubectl, namespace).values()
            for container in pod["status"].get("containerStatuses") or ()
            if "running" in (state := container.get("state") or {})
        ),
        operator,
    )
    final = phase(kubectl, namespace, "Failed", operator)
    assert ready(final)[:2] == ("False", "DeadlineExceeded")
    assert final["startTime"] == started[0]
    eventually("no workers left", lambda: not workers(kubectl, namespace), operator)
    assert any(e.startswith("DeadlineExceeded:") for e in object_events(kubectl, "tj"))


def test_a_finished_job_is_deleted_ttl_seconds_after_it_finished(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    apply(
        kubectl,
        trainingjob(
            "tj",
            namespace,
            gpu_type,
            workers={"min": 1, "max": 1},
            runPolicy={"ttlSecondsAfterFinished": 2},
        ),
    )
    eventually("the worker running", lambda: running(kubectl, namespace), operator)
    exit_worker(kubectl, namespace, "tj-worker-0", 0)
    eventually(
        "Succeeded", lambda: status(kubectl, namespace).get("phase") == "Succeeded", operator
    )
    eventually(
        "the job deleted",
        lambda: not get(kubectl, "trainingjobs", "-n", namespace)["items"],
        operator,
    )
    # Its owned objects go with it (the garbage collector follows the owner references).
    eventually("its worker pod gone", lambda: not workers(kubectl, namespace), operator)


def test_a_forged_finished_phase_neither_ends_nor_deletes_a_running_job(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    apply(
        kubectl,
        trainingjob(
            "tj",
            namespace,
            gpu_type,
            workers={"min": 1, "max": 1},
            runPolicy={"ttlSecondsAfterFinished": 1},
        ),
    )
    (node,) = eventually(
        "the worker running", lambda: running(kubectl, namespace), operator
    ).values()
    phase(kubectl, namespace, "Running", operator)
    # Someone who may write the status subresource says the job succeeded long ago.
    forged = {"status": {"phase": "Succeeded", "completionTime": "2020-01-01T00:00:00Z"}}
    kubectl(
        "patch", "trainingjob", "tj", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(forged),
    )  # fmt: skip
    eventually(
        "the job Running again",
        lambda: status(kubectl, namespace).get("phase") == "Running",
        operator,
    )
    # Not deleted by its TTL, nor its worker; and no outcome recorded.
    job = get(kubectl, "trainingjob", "tj", "-n", namespace)
    assert c.ANNOTATION_OUTCOME not in job["metadata"].get("annotations", {})
    assert running(kubectl, namespace) == {"tj-worker-0": node}
    # The end the operator sees itself is recorded, and then the TTL does delete the job.
    exit_worker(kubectl, namespace, "tj-worker-0", 0)
    eventually(
        "the job deleted",
        lambda: not get(kubectl, "trainingjobs", "-n", namespace)["items"],
        operator,
    )


def test_a_job_no_pool_can_hold_is_unschedulable_and_says_why(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    huge = {"gpus": 16, "gpuType": gpu_type, "cpu": "1", "memory": "1Gi"}
    apply(kubectl, trainingjob("tj", namespace, gpu_type, resources=huge))
    found = eventually(
        "Ready=False Unschedulable",
        lambda: (
            "conditions" in (s := status(kubectl, namespace))
            and ready(s)[1] == "Unschedulable"
            and s
        ),
        operator,
    )
    message = ready(found)[2]
    assert "incompatible with all node pools" in message
    assert f"pool {spot_pool} has nodes with 1 GPU, the pod needs 16 GPUs" in message
    assert not workers(kubectl, namespace)  # nothing created that could never run
    said = eventually(
        "an Unschedulable Event",
        lambda: [e for e in object_events(kubectl, "tj") if e.startswith("Unschedulable")],
        operator,
    )
    # Passes go on every second: five seconds of them post no second Event, and create
    # nothing.
    time.sleep(5)
    again = [e for e in object_events(kubectl, "tj") if e.startswith("Unschedulable")]
    assert again == said
    assert not workers(kubectl, namespace)


def test_a_job_creates_no_more_workers_than_its_pools_could_ever_hold(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
) -> None:
    name = cluster_scoped_name("gpunodepool", "two")
    two = small_pool(name, gpu_type)
    two["spec"]["maxNodes"] = 2
    apply(kubectl, two)
    apply(kubectl, trainingjob("tj", namespace, gpu_type, workers={"min": 1, "max": 300}))
    found = eventually(
        "two workers running, and the job saying why no more",
        lambda: (
            len(running(kubectl, namespace)) == 2
            and "at most 2" in ready(s := status(kubectl, namespace))[2]
            and s
        ),
        operator,
    )
    assert found["workers"]["desired"] == 300
    assert sorted(workers(kubectl, namespace)) == ["tj-worker-0", "tj-worker-1"]


REPORT = (
    '{"compression":{"sizeBytes":{"before":84757,"after":38477},"accuracy":{"before":0.932,'
    '"after":0.932},"latencyMs":{"before":0.31,"after":0.26},"accepted":true},'
    '"reason":"accuracy 0.932 -> 0.932: within maxAccuracyDrop 0.02"}'
)


def test_a_finished_job_compresses_and_deploys_its_inference_service(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    """Training ends (worker exit 0): the job is Compressing with a compress pod running the
    trainer's compress command; the pod ends with its report as termination message: the job
    is Succeeded with status.compression and status.model, and the InferenceService of
    spec.deploy exists, serving the compressed model from the checkpoint claim."""
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
    eventually(
        "Compressing", lambda: status(kubectl, namespace).get("phase") == "Compressing", operator
    )

    def compress_pod() -> dict[str, Any] | None:
        found = get(kubectl, "pods", "-n", namespace, "-l", "sparsam.dev/role=compress")["items"]
        return found[0] if found and found[0]["status"].get("phase") == "Running" else None

    pod = eventually("the compress pod running", compress_pod, operator)
    (container,) = pod["spec"]["containers"]
    assert container["command"][:4] == ["python", "-m", "sparsam_trainer", "compress"]
    exit_worker(kubectl, namespace, "tj-compress", 0, REPORT, container="compress")
    final = phase(kubectl, namespace, "Succeeded", operator)
    assert final["compression"]["sizeBytes"] == {"before": 84757, "after": 38477}
    assert final["model"] == {"uri": "pvc://ckpt/tj/compressed/model"}
    served = get(kubectl, "inferenceservice", "digits", "-n", namespace)
    assert served["spec"]["model"]["uri"] == "pvc://ckpt/tj/compressed/model"
    assert served["spec"]["replicas"] == {"min": 0, "max": 2}
    assert (
        "Deployed: InferenceService digits serves pvc://ckpt/tj/compressed/model"
        in object_events(kubectl, "tj")
    )
    # Training and compression cost is the job's; the deployed service is not owned by it.
    assert not served["metadata"].get("ownerReferences")


def test_a_spent_budget_suspends_the_job(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    """Two workers on spot nodes at 2.0 per node-hour (one GPU each) spend 0.001 in about
    a second: the job is suspended, its workers removed, and status and an Event say why."""
    apply(
        kubectl,
        trainingjob("tj", namespace, gpu_type, budget={"maxCost": 0.001, "onExceeded": "Suspend"}),
    )

    final = phase(kubectl, namespace, "Suspended", operator)
    assert ready(final)[:2] == ("False", "BudgetExceeded")
    assert "spec.budget.maxCost 0.001" in ready(final)[2]
    assert final["cost"]["accrued"] >= 0.001
    eventually("no workers left", lambda: not workers(kubectl, namespace), operator)
    assert any(e.startswith("BudgetExceeded:") for e in object_events(kubectl, "tj"))


def test_a_costpolicy_budget_blocks_new_jobs_and_lets_running_ones_go_on(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    spot_pool: str,
    gpu_type: str,
) -> None:
    """A job runs in a namespace whose CostPolicy has a tiny monthly budget with BlockNew.
    Once the job's accrued cost reaches the policy (status.cost is written every 30 s), the
    policy reports BudgetExceeded, a second job waits with reason BudgetExceeded, and the
    first keeps running."""
    kubectl("label", "namespace", namespace, f"sparsam-test={namespace}")
    policy = cluster_scoped_name("costpolicy", "budget")
    apply(
        kubectl,
        {
            "apiVersion": "sparsam.dev/v1alpha1",
            "kind": "CostPolicy",
            "metadata": {"name": policy},
            "spec": {
                "namespaceSelector": {"matchLabels": {"sparsam-test": namespace}},
                "priority": 1000,
                "budget": {"monthly": 0.0005, "onExceeded": "BlockNew"},
            },
        },
    )
    apply(kubectl, trainingjob("tj", namespace, gpu_type))
    eventually(
        "the first job running",
        lambda: status(kubectl, namespace).get("phase") == "Running",
        operator,
    )

    def exceeded() -> bool:
        found = get(kubectl, "costpolicy", policy).get("status", {})
        return any(
            c["type"] == "BudgetExceeded" and c["status"] == "True"
            for c in found.get("conditions", [])
        )

    eventually("the policy's budget spent", exceeded, operator, timeout=120)
    assert get(kubectl, "costpolicy", policy)["status"]["matchedNamespaces"] == [namespace]

    apply(kubectl, trainingjob("late", namespace, gpu_type))

    def blocked() -> dict[str, Any] | None:
        found = status(kubectl, namespace, "late")
        ready = [c for c in found.get("conditions", []) if c["type"] == "Ready"]
        return found if ready and ready[0]["reason"] == "BudgetExceeded" else None

    late = eventually("the second job blocked", blocked, operator)
    assert late["phase"] == "Pending"
    assert not [w for w in workers(kubectl, namespace) if w.startswith("late-")]
    assert status(kubectl, namespace)["phase"] == "Running"


def test_workers_are_admitted_under_pod_security_restricted_and_secrets_stay_references(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    spot_pool: str,
    gpu_type: str,
) -> None:
    """The apiserver's PodSecurity admission enforces "restricted" in the namespace: the
    workers the operator creates are admitted. A Secret the job references by secretKeyRef
    never appears in what the operator writes: status, Events, annotations, pods, its log."""
    canary = "canary-7f3a9c1e-do-not-leak"
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    kubectl("create", "secret", "generic", "wandb", "-n", namespace, f"--from-literal=key={canary}")
    secret = {
        "name": "WANDB_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "key"}},
    }
    apply(kubectl, trainingjob("tj", namespace, gpu_type, env=[secret]))
    eventually("two workers running", lambda: len(running(kubectl, namespace)) == 2, operator)

    written = [
        kubectl("get", "trainingjob", "tj", "-n", namespace, "-o", "yaml").stdout,
        kubectl("get", "pods", "-n", namespace, "-o", "yaml").stdout,
        kubectl("get", "events", "-n", namespace, "-o", "yaml").stdout,
        kubectl("get", "gpunodepools", "-o", "yaml").stdout,
        operator.log.read_text(errors="replace"),
    ]
    assert not [text for text in written if canary in text]
    pod = workers(kubectl, namespace)["tj-worker-0"]
    (container,) = pod["spec"]["containers"]
    assert secret in container["env"]
