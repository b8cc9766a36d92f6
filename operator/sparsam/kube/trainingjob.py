"""What a TrainingJob runs as: a headless Service for rendezvous and one Pod per worker.

Pure builders (dicts in the shape the apiserver takes), so the tests read them field by field:

- `service_manifest`: `<job>`, headless, publishing not-ready addresses (rendezvous happens
  before any worker is ready), selecting the job's workers.
- `worker_manifest`: `<job>-worker-<i>`, hostname and subdomain set so worker 0 is reachable
  at `<job>-worker-0.<job>.<namespace>.svc`, where torchrun's c10d store listens. The
  container runs the job's command under `torchrun --nnodes=MIN:MAX --no-python`: torchrun is
  the elastic agent (rendezvous, restarts, world size) and the job's own command is the worker.
  If worker 0 is lost, its replacement takes the same name and the agents rendezvous again.

Every worker is labelled for the scale subresource and cost attribution (namespace, job, the
job's own labels passed through), owned by the job, restricted by Pod Security, and placed
by the spot policy and the CostPolicy's allowedGPUTypes (`kube.pods.Placement`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Final

from sparsam.api import constants as c
from sparsam.api.common import SpotPolicy
from sparsam.api.trainingjob import TrainingJob
from sparsam.decisions.delivery import EXPORT_ONLY, output_dir
from sparsam.decisions.effective_policy import NO_POLICY, choose_spot
from sparsam.decisions.training import worker_name
from sparsam.kube.pods import (
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    Placement,
    passed_labels,
    resources,
)

RENDEZVOUS_PORT: Final = 29400
#: Where each worker pod serves its checkpoint metrics (a PodMonitor scrapes port `metrics`).
METRICS_PORT: Final = 9400
#: Time the trainer has after SIGTERM to finish its step and write a checkpoint.
TERMINATION_GRACE_SECONDS: Final = 120
#: The command when spec.command is not set: the sparsam trainer.
DEFAULT_COMMAND: Final = ("python", "-m", "sparsam_trainer", "train")
#: torchrun's environment in every worker. By default (torch >= 2.4) the agents share the c10d
#: rendezvous store with the workers, and each agent learns MASTER_ADDR once, in its first
#: round: rank 0 publishes it under that round's keys only. A replacement that joins a later
#: round below rank 0 (ranks follow the sorted host names, so the replacement of any worker
#: but worker 0) then waits for a MASTER_ADDR that is never written there, while rank 0 waits
#: for the replacement's rank info; both time out after 60 s and the round is lost. Opting
#: out has rank 0 publish a fresh address and port in every round; tests/trainer/
#: test_elastic.py has a replacement join seconds after a loss.
#: On SIGTERM torchrun's agent forwards the signal to its workers and SIGKILLs them after
#: TORCH_ELASTIC_SHUTDOWN_TIMEOUT (30 s unless set): the trainer gets the pod's grace period
#: for its last step and checkpoint instead, less a margin for the agent's own exit.
TORCHRUN_ENV: Final = {
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(TERMINATION_GRACE_SECONDS - 10),
}


def owner_reference(job: TrainingJob) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.TRAINING_JOB.kind,
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(job: TrainingJob) -> dict[str, str]:
    return {
        **passed_labels(job.metadata.labels),
        c.LABEL_MANAGED_BY: c.FIELD_MANAGER,
        c.LABEL_JOB: job.metadata.name,
        c.LABEL_ROLE: c.ROLE_WORKER,
    }


def service_manifest(job: TrainingJob) -> dict[str, Any]:
    name = job.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": job.metadata.namespace,
            "labels": {c.LABEL_MANAGED_BY: c.FIELD_MANAGER, c.LABEL_JOB: name},
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {c.LABEL_JOB: name, c.LABEL_ROLE: c.ROLE_WORKER},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}],
        },
    }


def torchrun_command(job: TrainingJob) -> list[str]:
    spec = job.spec
    name, namespace = job.metadata.name, job.metadata.namespace
    endpoint = f"{worker_name(name, 0)}.{name}.{namespace}.svc:{RENDEZVOUS_PORT}"
    return [
        "torchrun",
        f"--nnodes={spec.workers.min}:{spec.workers.max}",
        f"--nproc-per-node={max(spec.resources.gpus, 1)}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={job.metadata.uid}",
        # Restarts after a lost peer are the normal case on spot; the job's backoffLimit
        # counts program failures, which end the pod.
        "--max-restarts=1000",
        "--no-python",
        *(spec.command or DEFAULT_COMMAND),
        *(spec.args or ()),
    ]


def _env(job: TrainingJob, checkpoint_interval: str | None) -> list[dict[str, Any]]:
    env = [e.to_raw() for e in job.spec.env or ()]
    ours: dict[str, str] = {
        "SPARSAM_JOB": job.metadata.name,
        "SPARSAM_NAMESPACE": job.metadata.namespace,
        # Where the worker exports its checkpoints' write time, step and time, which the
        # operator reads back through Prometheus (sparsam_trainer.telemetry).
        "SPARSAM_METRICS_PORT": str(METRICS_PORT),
        **TORCHRUN_ENV,
    }
    if job.spec.checkpoint is not None:
        directory = f"{job.spec.checkpoint.path.rstrip('/')}/{job.metadata.name}"
        ours["SPARSAM_CHECKPOINT_DIR"] = directory
        ours["SPARSAM_PROGRESS_FILE"] = f"{directory}/progress.jsonl"
        if checkpoint_interval is not None:
            ours["SPARSAM_CHECKPOINT_INTERVAL"] = checkpoint_interval
    named = {e["name"] for e in env}
    # The job's own env wins: a user who sets one of these knows why.
    return env + [{"name": k, "value": v} for k, v in ours.items() if k not in named]


def worker_manifest(
    job: TrainingJob,
    index: int,
    placement: Placement | None = None,
    checkpoint_interval: str | None = None,
    spot: SpotPolicy | None = None,
) -> dict[str, Any]:
    """Worker `index` of `job`. `checkpoint_interval` is the Go duration the operator chose
    (spec.checkpoint.interval, or the auto cadence), passed as SPARSAM_CHECKPOINT_INTERVAL.
    `spot` is the spot policy in force (`decisions.effective_policy.choose_spot`); None: the
    job's own, else Prefer (as where no CostPolicy governs)."""
    spec = job.spec
    where = placement or Placement()
    spot = spot or choose_spot(spec.capacity.spot, NO_POLICY).policy
    name = worker_name(job.metadata.name, index)
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, the pod's own
        # NCCL and gloo share tensors through /dev/shm; the runtime's default is 64 MiB.
        {"name": "shm", "mountPath": "/dev/shm"},  # noqa: S108 - an emptyDir too
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
    ]
    if spec.checkpoint is not None:
        mounts.append({"name": "checkpoints", "mountPath": spec.checkpoint.path})
        volumes.append(
            {
                "name": "checkpoints",
                "persistentVolumeClaim": {"claimName": spec.checkpoint.volume_claim},
            }
        )
    container: dict[str, Any] = {
        "name": "trainer",
        "image": spec.image,
        "command": torchrun_command(job),
        "env": _env(job, checkpoint_interval),
        "ports": [
            {"name": "rendezvous", "containerPort": RENDEZVOUS_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "resources": resources(spec.resources.gpus, spec.resources.cpu, spec.resources.memory),
        "volumeMounts": mounts,
        "securityContext": dict(RESTRICTED_CONTAINER),
        # A failed worker's last log lines (torchrun's error) reach the operator in its
        # status, e.g. a RendezvousConnectionError after worker 0 was lost.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    labels = _labels(job)
    labels[c.LABEL_WORKER_INDEX] = str(index)
    labels[c.LABEL_SPOT_POLICY] = spot
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": job.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "hostname": name,
            "subdomain": job.metadata.name,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": dict(RESTRICTED_POD),
            "containers": [container],
            "volumes": volumes,
            **where.pod_fields(spec.resources.gpus, spec.resources.gpu_type, spot),
        },
    }


def compress_name(job: str) -> str:
    return f"{job}-compress"


def compress_manifest(
    job: TrainingJob,
    placement: Placement | None = None,
    accuracy_cap: float | None = None,
    spot: SpotPolicy | None = None,
) -> dict[str, Any]:
    """The pod that compresses the trained model (`python -m sparsam_trainer compress`): a
    worker's pod (image, resources, volumes, placement, Pod Security) with the compress command
    on `<checkpoint dir>/model.pt`, writing `<checkpoint dir>/compressed/`, spec.compression in
    $SPARSAM_COMPRESSION, and the report's summary as its termination message. Without
    spec.compression: `EXPORT_ONLY` into `<checkpoint dir>/exported/` (decisions.delivery).
    `accuracy_cap`: the effective CostPolicy's compression.maxAccuracyDrop, which the job's
    own cannot exceed. `spot` as for `worker_manifest`."""
    compression, checkpoint = job.spec.compression or EXPORT_ONLY, job.spec.checkpoint
    if accuracy_cap is not None and accuracy_cap < compression.max_accuracy_drop:
        compression = replace(compression, max_accuracy_drop=accuracy_cap)
    if checkpoint is None:
        raise ValueError("a compress pod needs spec.checkpoint")
    pod = worker_manifest(job, 0, placement, spot=spot)
    pod["metadata"]["name"] = compress_name(job.metadata.name)
    labels = pod["metadata"]["labels"]
    labels[c.LABEL_ROLE] = c.ROLE_COMPRESS
    del labels[c.LABEL_WORKER_INDEX]
    spec = pod["spec"]
    del spec["hostname"], spec["subdomain"]
    (container,) = spec["containers"]
    directory = f"{checkpoint.path.rstrip('/')}/{job.metadata.name}"
    container["name"] = "compress"
    container.pop("ports")
    container["command"] = [
        "python",
        "-m",
        "sparsam_trainer",
        "compress",
        f"--model={directory}/model.pt",
        f"--output-dir={directory}/{output_dir(job)}",
    ]
    spec_json = json.dumps(compression.to_raw())
    container["env"].append({"name": "SPARSAM_COMPRESSION", "value": spec_json})
    container["terminationMessagePolicy"] = "File"
    return pod


def deployed_service_manifest(job: TrainingJob, model_uri: str) -> dict[str, Any]:
    """The InferenceService of spec.deploy, serving `model_uri`: what this job owns of it (the
    model and the replica range, applied as field manager sparsam); everything else (scaling,
    capacity) stays the user's. Not owned by the job: a service outlives the job's TTL."""
    deploy = job.spec.deploy
    if deploy is None:
        raise ValueError("no spec.deploy")
    resources: dict[str, Any] = {"gpus": 1 if job.spec.resources.gpus > 0 else 0}
    if job.spec.resources.gpu_type:
        resources["gpuType"] = job.spec.resources.gpu_type
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.INFERENCE_SERVICE.kind,
        "metadata": {
            "name": deploy.inference_service,
            "namespace": job.metadata.namespace,
            "labels": {c.LABEL_MANAGED_BY: c.FIELD_MANAGER, c.LABEL_JOB: job.metadata.name},
        },
        "spec": {
            "model": {"uri": model_uri, "format": "pytorch"},
            "resources": resources,
            "replicas": {"min": deploy.min_replicas, "max": deploy.max_replicas},
        },
    }
