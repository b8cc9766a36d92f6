"""report.json: what every stage did to the model, and whether the result is accepted.

The report is for two readers. A person reads `stages` (each stage's metrics, its change
against the stage before and against the original, and what it did, e.g. "6 of 12 heads kept"),
and `decision` (accepted or not, and why: the metric, its value before and after, the budget).
The operator reads `trainingJobStatus`, which has exactly the shape of the TrainingJob's
`status.compression` (camelCase, latency at batch 1) so it can be copied across unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sparsam_trainer.compress.evaluate import Metrics

REPORT_FORMAT = "sparsam.compression-report/v1"
REPORT_FILE = "report.json"
#: Where the kubelet reads a container's termination message (terminationMessagePath).
TERMINATION_LOG = "/dev/termination-log"
#: Accuracy is a fraction of a finite test set; this only absorbs float rounding.
_TOLERANCE = 1e-9

StageStatus = Literal["applied", "skipped"]


@dataclass(slots=True)
class StageResult:
    name: str
    status: StageStatus
    #: What the stage did (or, when skipped, why not), in words.
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    metrics: Metrics | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Decision:
    accepted: bool
    reason: str
    metric: str
    before: float
    after: float
    drop: float
    max_drop: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "reason": self.reason,
            "metric": self.metric,
            "before": self.before,
            "after": self.after,
            "drop": round(self.drop, 6),
            "maxAccuracyDrop": self.max_drop,
        }


def decide(original: Metrics, final: Metrics, max_drop: float) -> Decision:
    """Accept when test accuracy fell by at most `max_drop` (a fraction: 0.01 = one point)."""
    drop = original.accuracy - final.accuracy
    accepted = drop <= max_drop + _TOLERANCE
    verdict = "within" if accepted else "above"
    reason = (
        f"accuracy {original.accuracy:.4f} -> {final.accuracy:.4f}: a drop of {drop:.4f} is "
        f"{verdict} maxAccuracyDrop {max_drop:g}"
    )
    return Decision(accepted, reason, "accuracy", original.accuracy, final.accuracy, drop, max_drop)


def _ratio(before: float, after: float) -> float | None:
    return round(before / after, 3) if after > 0 else None


def delta(before: Metrics, after: Metrics) -> dict[str, Any]:
    """Changes from `before` to `after`: differences, the size ratio and the speedups."""
    b, a = before.latency, after.latency
    return {
        "accuracy": round(after.accuracy - before.accuracy, 6),
        "macro_f1": round(after.macro_f1 - before.macro_f1, 6),
        "size_bytes": after.size_bytes - before.size_bytes,
        "size_ratio": _ratio(before.size_bytes, after.size_bytes),
        "parameters": after.parameters - before.parameters,
        "sparsity": round(after.sparsity - before.sparsity, 6),
        "speedup_batch1_p50": _ratio(b.batch1_p50_ms, a.batch1_p50_ms),
        "speedup_batch32_p50": _ratio(b.batch32_p50_ms, a.batch32_p50_ms),
    }


def stage_json(stage: StageResult, previous: Metrics, original: Metrics) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": stage.name,
        "status": stage.status,
        "summary": stage.summary,
        "details": stage.details,
        "seconds": round(stage.seconds, 3),
    }
    if stage.warnings:
        out["warnings"] = stage.warnings
    if stage.metrics is not None:
        out["metrics"] = stage.metrics.as_dict()
        out["delta_from_previous"] = delta(previous, stage.metrics)
        out["delta_from_original"] = delta(original, stage.metrics)
    return out


def training_job_status(original: Metrics, final: Metrics, accepted: bool) -> dict[str, Any]:
    """The TrainingJob's status.compression object (crds/sparsam.dev_trainingjobs.yaml)."""
    return {
        "sizeBytes": {"before": original.size_bytes, "after": final.size_bytes},
        "accuracy": {"before": original.accuracy, "after": final.accuracy},
        "latencyMs": {
            "before": original.latency.batch1_p50_ms,
            "after": final.latency.batch1_p50_ms,
        },
        "accepted": accepted,
    }


def build_report(
    *,
    task: str,
    spec: dict[str, Any],
    settings: dict[str, Any],
    original: Metrics,
    stages: list[StageResult],
    decision: Decision,
) -> dict[str, Any]:
    applied = [s.metrics for s in stages if s.metrics is not None]
    final = applied[-1] if applied else original
    stage_entries: list[dict[str, Any]] = []
    previous = original
    for stage in stages:
        stage_entries.append(stage_json(stage, previous, original))
        if stage.metrics is not None:
            previous = stage.metrics
    return {
        "format": REPORT_FORMAT,
        "task": task,
        "spec": spec,
        "settings": settings,
        "original": original.as_dict(),
        "stages": stage_entries,
        "final": final.as_dict(),
        "delta": delta(original, final),
        "decision": decision.as_dict(),
        "trainingJobStatus": training_job_status(original, final, decision.accepted),
    }


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    """Write report.json atomically (a reader never sees half a report), and its summary as
    the container's termination message."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    tmp = path.with_name(f".{REPORT_FILE}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    write_termination_message(report)
    return path


def termination_message(report: dict[str, Any]) -> str:
    """What the operator reads from the finished pod (Kubernetes keeps up to 4 KiB of it):
    the status.compression block and the decision's reason, as one line of JSON."""
    summary = {
        "compression": report["trainingJobStatus"],
        "reason": str(report.get("decision", {}).get("reason", ""))[:1000],
    }
    return json.dumps(summary, separators=(",", ":"))


def write_termination_message(report: dict[str, Any]) -> None:
    """Best effort: to $SPARSAM_TERMINATION_LOG, else the kubelet's /dev/termination-log when
    it exists (in a pod); outside a pod there is nowhere to write, and nothing is lost, since
    report.json has it all."""
    target = Path(os.environ.get("SPARSAM_TERMINATION_LOG", TERMINATION_LOG))
    if not target.parent.is_dir() or (target == Path(TERMINATION_LOG) and not target.exists()):
        return
    with contextlib.suppress(OSError):
        target.write_text(termination_message(report), encoding="utf-8")
