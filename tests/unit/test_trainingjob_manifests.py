"""What a TrainingJob runs as: the rendezvous Service and the worker Pods, field by field."""

from __future__ import annotations

from typing import Any

import pytest

from sparsam.api.trainingjob import TrainingJob
from sparsam.kube.pods import Placement
from sparsam.kube.trainingjob import service_manifest, worker_manifest


def job(**spec: Any) -> TrainingJob:
    return TrainingJob.from_body(
        {
            "metadata": {
                "name": "bbc",
                "namespace": "ml",
                "uid": "u-1",
                "generation": 1,
                "labels": {"team": "news", "sparsam.dev/pool": "ignored"},
            },
            "spec": {
                "image": "trainer:1",
                "args": ["--task", "bbc-minilm"],
                "workers": {"min": 2, "max": 4},
                "resources": {"gpus": 1, "cpu": "4", "memory": "16Gi"},
                **spec,
            },
        }
    )


def test_worker_runs_the_job_command_under_torchrun_with_c10d_at_worker_0() -> None:
    pod = worker_manifest(job(), 1)
    (container,) = pod["spec"]["containers"]
    assert container["command"] == [
        "torchrun",
        "--nnodes=2:4",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=bbc-worker-0.bbc.ml.svc:29400",
        "--rdzv-id=u-1",
        "--max-restarts=1000",
        "--no-python",
        "python",
        "-m",
        "sparsam_trainer",
        "train",
        "--task",
        "bbc-minilm",
    ]
    assert pod["metadata"]["name"] == "bbc-worker-1"
    assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == ("bbc-worker-1", "bbc")
    assert pod["spec"]["restartPolicy"] == "Never"
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "17179869184", "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }


def test_worker_labels_owner_and_pod_security() -> None:
    pod = worker_manifest(job(), 0)
    assert pod["metadata"]["labels"] == {
        "team": "news",
        "app.kubernetes.io/managed-by": "sparsam",
        "sparsam.dev/job": "bbc",
        "sparsam.dev/role": "worker",
        "sparsam.dev/worker-index": "0",
        "sparsam.dev/spot": "Prefer",
    }
    (owner,) = pod["metadata"]["ownerReferences"]
    assert owner["uid"] == "u-1" and owner["controller"] is True
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = spec["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert spec["automountServiceAccountToken"] is False
    # A failure's last log lines reach status (decisions.training.lost_its_store reads them).
    assert spec["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_checkpoint_volume_and_environment() -> None:
    pod = worker_manifest(
        job(
            checkpoint={"volumeClaim": "ckpt", "path": "/checkpoints", "interval": "10m"},
            env=[{"name": "SPARSAM_JOB", "value": "mine"}],
        ),
        0,
        checkpoint_interval="10m",
    )
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env == {
        "SPARSAM_JOB": "mine",  # the job's own value wins
        "SPARSAM_CHECKPOINT_DIR": "/checkpoints/bbc",
        "SPARSAM_PROGRESS_FILE": "/checkpoints/bbc/progress.jsonl",
        "SPARSAM_CHECKPOINT_INTERVAL": "10m",
        # Checkpoint metrics, read back by the operator through Prometheus.
        "SPARSAM_NAMESPACE": "ml",
        "SPARSAM_METRICS_PORT": "9400",
        # A replacement can join a running rendezvous (kube.trainingjob.TORCHRUN_ENV).
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        # The trainer, not torchrun's 30 s default, has the pod's grace for its checkpoint.
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "110",
    }
    assert {"name": "metrics", "containerPort": 9400} in container["ports"]
    assert {"name": "checkpoints", "mountPath": "/checkpoints"} in container["volumeMounts"]
    assert {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "ckpt"}} in pod["spec"][
        "volumes"
    ]


SPOT_TERMS = [
    [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}],
    [{"key": "cloud.google.com/gke-spot", "operator": "In", "values": ["true"]}],
    [{"key": "eks.amazonaws.com/capacityType", "operator": "In", "values": ["SPOT"]}],
]
GPU = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SPOT = {"key": "karpenter.sh/capacity-type", "operator": "Exists", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("policy", "tolerations", "required", "preferred"),
    [
        ("Prefer", [GPU, SPOT], None, SPOT_TERMS),
        ("Require", [GPU, SPOT], SPOT_TERMS, None),
        (
            "Never",
            [GPU],
            [
                [
                    {"key": "karpenter.sh/capacity-type", "operator": "NotIn", "values": ["spot"]},
                    {"key": "cloud.google.com/gke-spot", "operator": "NotIn", "values": ["true"]},
                    {
                        "key": "eks.amazonaws.com/capacityType",
                        "operator": "NotIn",
                        "values": ["SPOT"],
                    },
                ]
            ],
            None,
        ),
    ],
    ids=["prefer", "require", "never"],
)
def test_spot_placement(
    policy: str,
    tolerations: list[dict[str, str]],
    required: list[list[dict[str, Any]]] | None,
    preferred: list[list[dict[str, Any]]] | None,
) -> None:
    spec = worker_manifest(job(capacity={"spot": policy}), 0)["spec"]
    assert spec["tolerations"] == tolerations
    affinity = spec["affinity"]["nodeAffinity"]
    got_required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    got_preferred = affinity.get("preferredDuringSchedulingIgnoredDuringExecution")
    assert (
        None
        if got_required is None
        else [t["matchExpressions"] for t in got_required["nodeSelectorTerms"]]
    ) == required
    assert (
        None
        if got_preferred is None
        else [p["preference"]["matchExpressions"] for p in got_preferred]
    ) == preferred


def test_allowed_gpu_types_and_gpu_type() -> None:
    allowed = Placement(allowed_gpu_types=("NVIDIA-A10G", "NVIDIA-L4"))
    spec = worker_manifest(job(capacity={"spot": "Require"}), 0, allowed)["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    gpu = {
        "key": "nvidia.com/gpu.product",
        "operator": "In",
        "values": ["NVIDIA-A10G", "NVIDIA-L4"],
    }
    assert all(gpu in t["matchExpressions"] for t in terms["nodeSelectorTerms"])
    named = worker_manifest(job(resources={"gpus": 1, "gpuType": "NVIDIA-L4"}), 0)["spec"]
    assert named["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}


def test_cpu_only_workers_do_not_tolerate_gpu_nodes() -> None:
    spec = worker_manifest(job(resources={"gpus": 0}, capacity={"spot": "Never"}), 0)["spec"]
    assert spec["tolerations"] == []
    assert "limits" not in spec["containers"][0]["resources"]


def test_rendezvous_service_is_headless_and_publishes_unready_workers() -> None:
    svc = service_manifest(job())
    assert svc["metadata"]["name"] == "bbc"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"sparsam.dev/job": "bbc", "sparsam.dev/role": "worker"}
