"""The TrainingJob model: the example parses, defaults apply, bad bodies name the field, and the
model agrees with crds/sparsam.dev_trainingjobs.yaml."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparsam.api.parse import (
    InvalidSpec,
    Quantity,
    read_value,
)
from sparsam.api.trainingjob import (
    Checkpoint,
    EnvVar,
    TrainingJob,
)

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "sparsam.dev_trainingjobs.yaml"
EXAMPLE_PATH = ROOT / "examples" / "trainingjob.yaml"

MINIMAL: dict[str, Any] = {
    "apiVersion": "sparsam.dev/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "tiny", "namespace": "ml", "uid": "u-1", "generation": 2},
    "spec": {"image": "trainer:1"},
}


def example_body() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(EXAMPLE_PATH.read_text()) if d]
    (body,) = [d for d in docs if d.get("kind") == "TrainingJob"]
    return dict(body)


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def lookup(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, tuple) else getattr(obj, part)
    return obj


# --- the example --------------------------------------------------------------------------

EXAMPLE = TrainingJob.from_body(example_body())


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metadata.name", "bbc-minilm"),
        ("spec.command", ("python", "-m", "sparsam_trainer", "train")),
        ("spec.args", ("--task", "bbc-minilm")),
        ("spec.workers.min", 2),
        ("spec.workers.max", 4),
        ("spec.workers.replicas", None),
        ("spec.resources.gpus", 1),
        ("spec.resources.cpu", Quantity(4)),
        ("spec.resources.memory", Quantity(16 * 2**30)),
        ("spec.capacity.spot", "Prefer"),
        ("spec.checkpoint.volume_claim", "bbc-minilm-checkpoints"),
        ("spec.checkpoint.interval_auto", True),
        ("spec.compression.pruning.sparsity", 0.5),
        ("spec.compression.quantization.mode", "dynamic"),
        ("spec.compression.distillation", None),
        ("spec.compression.max_accuracy_drop", 0.01),
        ("spec.deploy.inference_service", "bbc-news-classifier"),
        ("spec.budget.max_cost", 25.0),
        ("spec.env.1.value_from.secret_key_ref.key", "api-key"),
        ("spec.run_policy.backoff_limit", 3),
        ("status.phase", None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_example_parses(path: str, expected: Any) -> None:
    assert lookup(EXAMPLE, path) == expected


def test_example_is_one_trainingjob_without_namespace() -> None:
    body = example_body()
    assert body["apiVersion"] == "sparsam.dev/v1alpha1"
    assert "namespace" not in body["metadata"]


# --- defaults -----------------------------------------------------------------------------

MINIMAL_JOB = TrainingJob.from_body(MINIMAL)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metadata.name", "tiny"),
        ("metadata.namespace", "ml"),
        ("metadata.generation", 2),
        ("spec.command", None),
        ("spec.env", None),
        ("spec.workers.min", 1),
        ("spec.workers.max", 1),
        ("spec.workers.replicas", None),
        ("spec.resources.gpus", 1),
        ("spec.resources.gpu_type", None),
        ("spec.resources.cpu", Quantity(2)),
        ("spec.resources.memory", Quantity(8 * 2**30)),
        ("spec.capacity.spot", None),
        ("spec.checkpoint", None),
        ("spec.compression", None),
        ("spec.deploy", None),
        ("spec.budget", None),
        ("spec.run_policy.backoff_limit", 3),
        ("spec.run_policy.active_deadline_seconds", None),
        ("spec.run_policy.suspend", False),
        ("status.conditions", ()),
        ("status.preemptions", 0),
        ("status.restarts", 0),
        ("status.cost", None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_defaults_on_a_minimal_body(path: str, expected: Any) -> None:
    assert lookup(MINIMAL_JOB, path) == expected


@pytest.mark.parametrize(
    ("raw", "path", "expected"),
    [
        ({"checkpoint": {"volumeClaim": "c"}}, "checkpoint.path", "/checkpoints"),
        ({"checkpoint": {"volumeClaim": "c"}}, "checkpoint.interval", "auto"),
        ({"compression": {"pruning": {}}}, "compression.pruning.sparsity", 0.5),
        ({"compression": {"pruning": {}}}, "compression.pruning.structured", False),
        ({"compression": {"quantization": {}}}, "compression.quantization.mode", "dynamic"),
        ({"compression": {"quantization": {}}}, "compression.max_accuracy_drop", 0.01),
        (
            {"compression": {"distillation": {"student": "s"}}},
            "compression.distillation.alpha",
            0.5,
        ),
        ({"deploy": {"inferenceService": "x"}}, "deploy.min_replicas", 0),
        ({"deploy": {"inferenceService": "x"}}, "deploy.max_replicas", 3),
        ({"budget": {"maxCost": 10}}, "budget.on_exceeded", "Suspend"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_defaults_inside_optional_sections(raw: dict[str, Any], path: str, expected: Any) -> None:
    job = TrainingJob.from_body({"spec": {"image": "trainer:1", **raw}})
    assert lookup(job.spec, path) == expected


# --- invalid bodies -----------------------------------------------------------------------


def mutated(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = example_body()
    change(body)
    return body


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda b: b["spec"].pop("image"), "spec.image"),
        (lambda b: b["spec"]["workers"].update(min="two"), "spec.workers.min"),
        (lambda b: b["spec"]["capacity"].update(spot="Sometimes"), "spec.capacity.spot"),
        (lambda b: b["spec"]["resources"].update(memory="lots"), "spec.resources.memory"),
        (lambda b: b["spec"]["checkpoint"].pop("volumeClaim"), "spec.checkpoint.volumeClaim"),
        (
            lambda b: b["spec"]["env"][1]["valueFrom"]["secretKeyRef"].pop("key"),
            "spec.env[1].valueFrom.secretKeyRef.key",
        ),
        (
            lambda b: b["spec"]["compression"]["quantization"].update(mode="int4"),
            "spec.compression.quantization.mode",
        ),
        (lambda b: b["spec"].update(args="--task"), "spec.args"),
        (lambda b: b.update(status={"phase": "Sleeping"}), "status.phase"),
        (
            lambda b: b.update(status={"conditions": [{"type": "Ready", "status": "True"}]}),
            "status.conditions[0].reason",
        ),
        (lambda b: b["spec"]["workers"].update(max=3_000_000_000), "spec.workers.max"),
        (
            lambda b: b["spec"]["runPolicy"].update(backoffLimit=2**31 - 1),
            "spec.runPolicy.backoffLimit",
        ),
        (
            lambda b: b["spec"]["checkpoint"].update(interval="999999999999h"),
            "spec.checkpoint.interval",
        ),
        (lambda b: b["spec"]["checkpoint"].update(interval="often"), "spec.checkpoint.interval"),
        (lambda b: b["spec"]["checkpoint"].update(path="/c/../etc"), "spec.checkpoint.path"),
        (
            lambda b: b["spec"]["compression"].update(distillation={"student": "pvc://m/../x"}),
            "spec.compression.distillation.student",
        ),
    ],
    ids=[
        "image-missing",
        "workers-min-not-int",
        "spot-enum",
        "memory-not-quantity",
        "volumeClaim-missing",
        "secretKeyRef-key-missing",
        "quantization-mode-enum",
        "args-not-list",
        "phase-enum",
        "condition-reason-missing",
        "workers-max-huge",
        "backoff-limit-huge",
        "interval-beyond-bound",
        "interval-not-duration",
        "checkpoint-path-dot-segments",
        "student-dot-segments",
    ],
)
def test_invalid_bodies_name_the_field(change: Callable[[dict[str, Any]], None], path: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        TrainingJob.from_body(mutated(change))
    assert caught.value.path == path


# --- helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "auto", "duration"),
    [
        ("auto", True, None),
        ("10m", False, timedelta(minutes=10)),
        ("1h30m", False, timedelta(hours=1, minutes=30)),
    ],
    ids=["auto", "10m", "1h30m"],
)
def test_checkpoint_interval(interval: str, auto: bool, duration: timedelta | None) -> None:
    checkpoint = Checkpoint(volume_claim="c", interval=interval)
    assert checkpoint.interval_auto is auto
    assert checkpoint.interval_duration == duration


@pytest.mark.parametrize(
    "raw",
    [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": True}}},
        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "k"}}},
        {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ],
    ids=["value", "secret", "configmap", "field"],
)
def test_env_var_round_trips(raw: dict[str, Any]) -> None:
    assert read_value(EnvVar, raw, "spec.env[0]").to_raw() == raw


def test_conditions_round_trip() -> None:
    raw = {
        "type": "Ready",
        "status": "False",
        "reason": "BudgetExceeded",
        "message": "spent 25 of 25",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 3,
    }
    status = TrainingJob.from_body({**MINIMAL, "status": {"conditions": [raw]}}).status
    ready = status.condition("Ready")
    assert ready is not None
    assert ready.to_raw() == raw
    assert status.condition("Compressed") is None
    assert status.conditions == (ready,)


# --- the model agrees with the CRD --------------------------------------------------------


def test_scale_subresource_and_printer_columns() -> None:
    (version,) = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.workers.replicas",
        "statusReplicasPath": ".status.workers.running",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Workers": ".status.workers.running",
        "Cost": ".status.cost.accrued",
        "Savings": ".status.cost.savingsRatio",
        "Age": ".metadata.creationTimestamp",
    }
