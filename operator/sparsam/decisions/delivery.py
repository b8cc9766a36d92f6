"""After training: compress the model, then deploy it.

    decision = decide_delivery(job, compress_pod)
    # create decision.create_pod; apply the InferenceService when decision.deploy_uri;
    # write decision.phase / compression / condition / events

Pure: the job and what its compress pod reports (phase, exit code, termination message) in, a
decision out. The flow, for a job whose training succeeded and that has `spec.deploy` or
`spec.compression`:

1. **Compressing**: one pod `<job>-compress` runs `python -m sparsam_trainer compress` on the
   trained model in the checkpoint volume (the decision asks for it while there is none). Its
   termination message is the report's `status.compression` block and the reason.
2. The pod exits 0: the compressed model is accepted and exported. With `spec.deploy` the
   InferenceService named there is created or updated with the model's URI
   (`pvc://<claim>/<job>/compressed/model`), and the job is **Succeeded** with `status.model`.
3. The pod exits 76 (the accuracy budget): `CompressionRejected=True` with the figures, an
   Event, and the job is **Succeeded** (training did succeed); nothing is deployed, so a model
   already serving is left as it is.
4. Any other failure: **Failed**, reason `CompressionFailed`, with the pod's own message.

Without `spec.compression`, `spec.deploy` deploys the model as trained: the same pod runs the
same step with no stage (`EXPORT_ONLY`: nothing is lost, so it is accepted), which exports a
servable model to `<job>/exported/model`; the phase meanwhile is **Deploying**, and
`status.compression` stays empty (nothing was compressed). Without `spec.checkpoint` there is
no volume for the model: `Deployed=False`, reason `CheckpointRequired`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

from sparsam.api.trainingjob import Compression, Phase, Quantization, TrainingJob

#: The trainer's exit code for "the compressed model misses the accuracy budget".
EXIT_REJECTED: Final = 76
#: Condition types.
COMPRESSION_REJECTED: Final = "CompressionRejected"
DEPLOYED: Final = "Deployed"
#: Where the compress pod writes, inside the job's directory on the checkpoint volume: the
#: compressed model, or (without spec.compression) the model as trained.
COMPRESSED_DIR: Final = "compressed"
EXPORTED_DIR: Final = "exported"
MODEL_SUBDIR: Final = "model"
#: What the compress pod is given for a job without spec.compression: no stage runs, and the
#: model is exported as trained (the trainer exports servable models in that step only).
EXPORT_ONLY: Final = Compression(quantization=Quantization("none"), max_accuracy_drop=0.0)

PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]


@dataclass(frozen=True, slots=True)
class CompressPod:
    """The compress pod as observed: its phase, and once it ended, its container's exit code
    and termination message."""

    phase: PodPhase
    exit_code: int | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: Literal["True", "False"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class DeliveryDecision:
    phase: Phase
    create_pod: bool = False
    #: Apply the InferenceService of spec.deploy with this model URI.
    deploy_uri: str | None = None
    #: status.compression, from the pod's report.
    compression: dict[str, Any] | None = None
    conditions: tuple[Condition, ...] = ()
    #: The Ready condition (status, reason, message).
    ready: tuple[Literal["True", "False"], str, str] = ("True", "Succeeded", "")
    events: tuple[tuple[str, str, str], ...] = ()
    finished: bool = False


def delivers(job: TrainingJob) -> bool:
    """Whether a job has anything to do after training."""
    return job.spec.compression is not None or job.spec.deploy is not None


def output_dir(job: TrainingJob) -> str:
    """The compress pod's output folder, inside the job's directory."""
    return COMPRESSED_DIR if job.spec.compression is not None else EXPORTED_DIR


def model_uri(job: TrainingJob) -> str | None:
    """Where the model to serve lands: `pvc://<claim>/<job>/compressed/model`, or
    `.../exported/model` without spec.compression (the worker mounts the claim's root at
    spec.checkpoint.path and writes under `<path>/<job>`)."""
    checkpoint = job.spec.checkpoint
    if checkpoint is None:
        return None
    name = job.metadata.name
    return f"pvc://{checkpoint.volume_claim}/{name}/{output_dir(job)}/{MODEL_SUBDIR}"


def decide_delivery(job: TrainingJob, pod: CompressPod | None) -> DeliveryDecision:
    """The next step after training succeeded (see the module docstring)."""
    if job.spec.checkpoint is None:
        field = "spec.compression" if job.spec.compression is not None else "spec.deploy"
        return _undeliverable(
            "CheckpointRequired",
            f"{field} needs spec.checkpoint: the trained model is stored on its volume,"
            " where the compress pod reads it",
        )
    phase: Phase = "Compressing" if job.spec.compression is not None else "Deploying"
    doing = (
        "compressing the trained model"
        if job.spec.compression is not None
        else "exporting the model as trained (no spec.compression)"
    )
    if pod is None:
        return DeliveryDecision(
            phase,
            create_pod=True,
            ready=("True", phase, doing),
            events=(("Normal", phase, f"started the compress pod: {doing}"),),
        )
    if pod.phase not in ("Succeeded", "Failed"):
        return DeliveryDecision(phase, ready=("True", phase, doing))
    report = _report(pod.message)
    compression = report.get("compression") if isinstance(report, dict) else None
    reason = str(report.get("reason", "")) if isinstance(report, dict) else ""
    code = pod.exit_code if pod.exit_code is not None else (0 if pod.phase == "Succeeded" else 1)
    if code == 0:
        if job.spec.compression is None:
            return _accepted(job, None, "")
        return _accepted(job, compression, reason)
    if code == EXIT_REJECTED:
        figures = _figures(compression)
        message = f"not deployed: {reason or 'the accuracy budget was missed'}{figures}"
        return DeliveryDecision(
            "Succeeded",
            compression=compression,
            conditions=(Condition(COMPRESSION_REJECTED, "True", "AccuracyBudget", message),),
            ready=("True", "Succeeded", "training finished; the compressed model was rejected"),
            events=(("Warning", COMPRESSION_REJECTED, message),),
            finished=True,
        )
    said = (pod.message or "").strip().splitlines()[0][:300] if pod.message else "no message"
    message = f"the compress pod exited {code}: {said}"
    return DeliveryDecision(
        "Failed",
        ready=("False", "CompressionFailed", message),
        events=(("Warning", "CompressionFailed", message),),
        finished=True,
    )


def _undeliverable(reason: str, message: str) -> DeliveryDecision:
    return DeliveryDecision(
        "Succeeded",
        conditions=(Condition(DEPLOYED, "False", reason, message),),
        ready=("True", "Succeeded", "training finished; nothing compressed or deployed"),
        events=(("Warning", reason, message),),
        finished=True,
    )


def _accepted(
    job: TrainingJob, compression: dict[str, Any] | None, reason: str
) -> DeliveryDecision:
    # Without spec.compression nothing was compressed, so there is nothing to accept.
    accepted = (
        ()
        if job.spec.compression is None
        else (Condition(COMPRESSION_REJECTED, "False", "Accepted", reason or "within budget"),)
    )
    deploy, uri = job.spec.deploy, model_uri(job)
    if deploy is None or uri is None:
        return DeliveryDecision(
            "Succeeded",
            compression=compression,
            conditions=accepted,
            ready=("True", "Succeeded", "training finished; the model is compressed"),
            finished=True,
        )
    message = f"InferenceService {deploy.inference_service} serves {uri}"
    if job.spec.compression is None:
        message += " (the model as trained: no spec.compression)"
    return DeliveryDecision(
        "Succeeded",
        deploy_uri=uri,
        compression=compression,
        conditions=(*accepted, Condition(DEPLOYED, "True", "Deployed", message)),
        ready=("True", "Succeeded", f"training finished; {message}"),
        events=(("Normal", "Deployed", message),),
        finished=True,
    )


def _report(message: str | None) -> Any:
    if not message:
        return {}
    try:
        return json.loads(message)
    except ValueError:
        return {}


def _figures(compression: Any) -> str:
    """' (accuracy 0.93 -> 0.88, size 84757 -> 38477 bytes)', or '' without figures."""
    if not isinstance(compression, dict):
        return ""
    parts = []
    accuracy, size = compression.get("accuracy") or {}, compression.get("sizeBytes") or {}
    if "before" in accuracy and "after" in accuracy:
        parts.append(f"accuracy {accuracy['before']:.4g} -> {accuracy['after']:.4g}")
    if "before" in size and "after" in size:
        parts.append(f"size {size['before']} -> {size['after']} bytes")
    return f" ({', '.join(parts)})" if parts else ""
