"""The real apiserver enforces the TrainingJob schema: bad input is rejected with a message that
names the field, immutable fields stay put, defaults apply, unknown fields are pruned, and /scale
writes spec.workers.replicas within its bounds."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparsam.api.trainingjob import TrainingJob

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PATH = ROOT / "examples" / "trainingjob.yaml"

Kubectl = Callable[..., Any]
Change = Callable[[dict[str, Any]], None]


def example() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(EXAMPLE_PATH.read_text()) if d]
    (body,) = [d for d in docs if d.get("kind") == "TrainingJob"]
    return copy.deepcopy(dict(body))


def minimal() -> dict[str, Any]:
    return {
        "apiVersion": "sparsam.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "tiny"},
        "spec": {"image": "trainer:1"},
    }


def apply(kubectl: Kubectl, namespace: str, manifest: dict[str, Any], *flags: str) -> Any:
    return kubectl(
        "apply", "-n", namespace, *flags, "-f", "-", input=yaml.safe_dump(manifest), check=False
    )


def read_back(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    done = kubectl("get", "trainingjob", name, "-n", namespace, "-o", "json")
    return dict(json.loads(done.stdout))


BAD: list[tuple[str, Change, str]] = [
    (
        "workers-min-above-max",
        lambda m: m["spec"]["workers"].update(min=5, max=4),
        "spec.workers.min must be less than or equal to spec.workers.max",
    ),
    (
        "workers-replicas-outside-range",
        lambda m: m["spec"]["workers"].update(replicas=9),
        "spec.workers.replicas must be between spec.workers.min and spec.workers.max",
    ),
    ("workers-min-zero", lambda m: m["spec"]["workers"].update(min=0), "spec.workers.min"),
    ("gpus-negative", lambda m: m["spec"]["resources"].update(gpus=-1), "spec.resources.gpus"),
    (
        "memory-not-a-quantity",
        lambda m: m["spec"]["resources"].update(memory="lots"),
        "spec.resources.memory",
    ),
    (
        "spot-not-in-enum",
        lambda m: m["spec"]["capacity"].update(spot="Sometimes"),
        "spec.capacity.spot",
    ),
    (
        "max-accuracy-drop-above-one",
        lambda m: m["spec"]["compression"].update(maxAccuracyDrop=1.5),
        "spec.compression.maxAccuracyDrop",
    ),
    (
        "sparsity-one",
        lambda m: m["spec"]["compression"]["pruning"].update(sparsity=1.0),
        "spec.compression.pruning.sparsity",
    ),
    (
        "quantization-mode-not-in-enum",
        lambda m: m["spec"]["compression"]["quantization"].update(mode="int4"),
        "spec.compression.quantization.mode",
    ),
    (
        "distillation-temperature-zero",
        lambda m: m["spec"]["compression"].update(
            distillation={"student": "minilm-l3", "temperature": 0}
        ),
        "spec.compression.distillation.temperature",
    ),
    (
        "distillation-alpha-above-one",
        lambda m: m["spec"]["compression"].update(
            distillation={"student": "minilm-l3", "alpha": 2}
        ),
        "spec.compression.distillation.alpha",
    ),
    (
        "compression-without-a-method",
        lambda m: m["spec"].update(compression={"maxAccuracyDrop": 0.02}),
        "spec.compression must set at least one of pruning, quantization or distillation",
    ),
    (
        "interval-not-a-duration",
        lambda m: m["spec"]["checkpoint"].update(interval="often"),
        'spec.checkpoint.interval must be "auto" or a duration',
    ),
    (
        "interval-zero",
        lambda m: m["spec"]["checkpoint"].update(interval="0s"),
        "spec.checkpoint.interval must be at least 1s",
    ),
    (
        "active-deadline-zero",
        lambda m: m["spec"]["runPolicy"].update(activeDeadlineSeconds=0),
        "spec.runPolicy.activeDeadlineSeconds",
    ),
    (
        "backoff-limit-negative",
        lambda m: m["spec"]["runPolicy"].update(backoffLimit=-1),
        "spec.runPolicy.backoffLimit",
    ),
    (
        "deploy-min-above-max",
        lambda m: m["spec"]["deploy"].update(minReplicas=3, maxReplicas=2),
        "spec.deploy.minReplicas must be less than or equal to spec.deploy.maxReplicas",
    ),
    ("budget-negative", lambda m: m["spec"]["budget"].update(maxCost=-1), "spec.budget.maxCost"),
    (
        "env-value-and-value-from",
        lambda m: m["spec"]["env"][1].update(value="inline-secret"),
        "spec.env[].value and spec.env[].valueFrom are mutually exclusive",
    ),
    (
        "env-value-from-two-sources",
        lambda m: m["spec"]["env"][1]["valueFrom"].update(
            configMapKeyRef={"name": "settings", "key": "api-key"}
        ),
        "spec.env[].valueFrom must set exactly one of",
    ),
    ("image-missing", lambda m: m["spec"].pop("image"), "spec.image"),
    (
        "checkpoint-without-claim",
        lambda m: m["spec"]["checkpoint"].pop("volumeClaim"),
        "spec.checkpoint.volumeClaim",
    ),
    (
        "name-too-long",
        lambda m: m["metadata"].update(name="a" * 51),
        "metadata.name must be at most 50 characters",
    ),
    # kubectl asks for strict field validation by default: an unknown field is an error.
    ("unknown-field-strict", lambda m: m["spec"].update(foo="bar"), "spec.foo"),
    # Every count and number has an upper bound (a pass builds lists of these sizes), also
    # beyond int32, which `format: int32` alone does not refuse.
    *[
        (
            f"{section}-{key}-{value}",
            lambda m, section=section, key=key, value=value: m["spec"][section].update(
                {key: value}
            ),
            f"spec.{section}.{key}: Invalid value",
        )
        for section, key, value in [
            ("workers", "max", 2**31 - 1),
            ("workers", "max", 3_000_000_000),
            ("workers", "min", 1001),
            ("workers", "replicas", 1001),
            ("resources", "gpus", 17),
            ("deploy", "minReplicas", 1001),
            ("deploy", "maxReplicas", 1001),
            ("budget", "maxCost", 1e10),
            ("runPolicy", "activeDeadlineSeconds", 2**40),
            ("runPolicy", "backoffLimit", 1001),
            ("runPolicy", "ttlSecondsAfterFinished", 2**31 - 1),
        ]
    ],
    (
        "distillation-temperature-above-100",
        lambda m: m["spec"]["compression"].update(
            distillation={"student": "minilm-l3", "temperature": 101}
        ),
        "spec.compression.distillation.temperature",
    ),
    (
        "distillation-temperature-below-0.01",
        lambda m: m["spec"]["compression"].update(
            distillation={"student": "minilm-l3", "temperature": 0.001}
        ),
        "spec.compression.distillation.temperature",
    ),
    (
        "distillation-epochs-above-10000",
        lambda m: m["spec"]["compression"].update(
            distillation={"student": "minilm-l3", "epochs": 10001}
        ),
        "spec.compression.distillation.epochs",
    ),
    *[
        (
            f"resources-{key}-{value}",
            lambda m, key=key, value=value: m["spec"]["resources"].update({key: value}),
            f"spec.resources.{key} must be at most {bound}",
        )
        for key, value, bound in [
            ("cpu", "1025", "1024"),
            ("cpu", 2**40, "1024"),
            ("memory", "17Ti", "16Ti"),
            ("memory", "9999999999E", "16Ti"),
        ]
    ],
    # Durations have an upper bound too, and one beyond Go's range still gets the rule's message.
    *[
        (
            f"interval-{interval}",
            lambda m, interval=interval: m["spec"]["checkpoint"].update(interval=interval),
            "spec.checkpoint.interval must be at most 720h",
        )
        for interval in ["721h", "999999999999h", "99999h99999h", "172800000s"]
    ],
    # The model is read from, and served off, the checkpoint volume.
    (
        "deploy-without-checkpoint",
        lambda m: m["spec"].pop("checkpoint"),
        "spec.deploy requires spec.checkpoint.volumeClaim",
    ),
    (
        "compression-without-checkpoint",
        lambda m: (m["spec"].pop("checkpoint"), m["spec"].pop("deploy")),
        "spec.compression requires spec.checkpoint.volumeClaim",
    ),
    (
        "checkpoint-path-dot-segments",
        lambda m: m["spec"]["checkpoint"].update(path="/checkpoints/../etc"),
        "spec.checkpoint.path must not contain '..' path segments",
    ),
    (
        "student-dot-segments",
        lambda m: m["spec"]["compression"].update(
            distillation={"student": "pvc://models/../../secrets"}
        ),
        "spec.compression.distillation.student must not contain '..' path segments",
    ),
]

#: The largest values each bound admits, all at once: the bounds are inclusive.
AT_THE_BOUNDS: list[tuple[str, Any]] = [
    ("workers", {"min": 1000, "max": 1000, "replicas": 1000}),
    ("deploy", {"minReplicas": 1000, "maxReplicas": 1000}),
    ("budget", {"maxCost": 1_000_000_000}),
    (
        "runPolicy",
        {
            "activeDeadlineSeconds": 31_536_000,
            "backoffLimit": 1000,
            "ttlSecondsAfterFinished": 31_536_000,
        },
    ),
    ("checkpoint", {"interval": "720h"}),
    ("resources", {"cpu": 1024, "memory": "16Ti"}),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_rejected_naming_the_field(
    kubectl: Kubectl, namespace: str, change: Change, expected: str
) -> None:
    manifest = example()
    change(manifest)
    done = apply(kubectl, namespace, manifest)
    assert done.returncode != 0, f"accepted: {yaml.safe_dump(manifest)}"
    assert expected in done.stderr


def test_values_at_the_bounds_are_accepted_and_parse(kubectl: Kubectl, namespace: str) -> None:
    manifest = example()
    for section, values in AT_THE_BOUNDS:
        manifest["spec"][section].update(values)
    manifest["spec"]["compression"]["distillation"] = {
        "student": "pvc://models/minilm..l3",  # '..' inside a segment is a name, not a step up
        "temperature": 100,
        "epochs": 10000,
    }
    apply(kubectl, namespace, manifest).check_returncode()
    job = TrainingJob.from_body(read_back(kubectl, namespace, manifest["metadata"]["name"]))
    assert job.spec.workers.max == 1000
    assert job.spec.checkpoint is not None
    assert job.spec.checkpoint.interval_duration == timedelta(hours=720)


def test_the_example_is_accepted(kubectl: Kubectl, namespace: str) -> None:
    done = apply(kubectl, namespace, example())
    assert done.returncode == 0, done.stderr
    stored = read_back(kubectl, namespace, "bbc-minilm")
    assert TrainingJob.from_body(stored).spec == TrainingJob.from_body(example()).spec


def test_apiserver_defaults_equal_the_model_defaults(kubectl: Kubectl, namespace: str) -> None:
    done = apply(kubectl, namespace, minimal())
    assert done.returncode == 0, done.stderr
    stored = read_back(kubectl, namespace, "tiny")
    assert stored["spec"]["workers"] == {"min": 1, "max": 1}
    # spot is not defaulted: unset, the governing CostPolicy's spot.default applies.
    assert stored["spec"]["capacity"] == {}
    assert stored["spec"]["runPolicy"] == {"backoffLimit": 3, "suspend": False}
    assert TrainingJob.from_body(stored).spec == TrainingJob.from_body(minimal()).spec


IMMUTABLE: list[tuple[str, Change, str]] = [
    (
        "resources",
        lambda m: m["spec"]["resources"].update(gpus=2),
        "spec.resources is immutable",
    ),
    (
        "checkpoint-claim",
        lambda m: m["spec"]["checkpoint"].update(volumeClaim="other-claim"),
        "spec.checkpoint.volumeClaim is immutable",
    ),
    (
        "checkpoint-path",
        lambda m: m["spec"]["checkpoint"].update(path="/elsewhere"),
        "spec.checkpoint.path is immutable",
    ),
    (
        "checkpoint-removed",
        lambda m: m["spec"].pop("checkpoint"),
        "spec.checkpoint cannot be added or removed after creation",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), [c[1:] for c in IMMUTABLE], ids=[c[0] for c in IMMUTABLE]
)
def test_immutable_fields_cannot_change(
    kubectl: Kubectl, namespace: str, change: Change, expected: str
) -> None:
    manifest = example()
    created = apply(kubectl, namespace, manifest)
    assert created.returncode == 0, created.stderr
    change(manifest)
    done = apply(kubectl, namespace, manifest)
    assert done.returncode != 0, "the change was accepted"
    assert expected in done.stderr


def test_mutable_fields_can_change(kubectl: Kubectl, namespace: str) -> None:
    manifest = example()
    assert apply(kubectl, namespace, manifest).returncode == 0
    manifest["spec"]["workers"]["max"] = 3
    manifest["spec"]["capacity"]["spot"] = "Never"
    manifest["spec"]["runPolicy"]["suspend"] = True
    done = apply(kubectl, namespace, manifest)
    assert done.returncode == 0, done.stderr
    stored = read_back(kubectl, namespace, "bbc-minilm")["spec"]
    assert (stored["workers"]["max"], stored["capacity"]["spot"]) == (3, "Never")
    assert stored["runPolicy"]["suspend"] is True


def test_unknown_fields_are_pruned(kubectl: Kubectl, namespace: str) -> None:
    manifest = example()
    manifest["spec"]["foo"] = "bar"
    manifest["spec"]["workers"]["surprise"] = 1
    manifest["spec"]["env"][0]["extra"] = "x"
    # Without strict field validation the apiserver accepts the object and drops what it does not
    # know, so nothing the schema does not describe is ever stored.
    done = apply(kubectl, namespace, manifest, "--validate=false")
    assert done.returncode == 0, done.stderr
    stored = read_back(kubectl, namespace, "bbc-minilm")["spec"]
    assert "foo" not in stored
    assert "surprise" not in stored["workers"]
    assert "extra" not in stored["env"][0]


def test_scale_writes_replicas_within_bounds(kubectl: Kubectl, namespace: str) -> None:
    assert apply(kubectl, namespace, example()).returncode == 0
    kubectl("scale", "trainingjob/bbc-minilm", "-n", namespace, "--replicas=3")
    assert read_back(kubectl, namespace, "bbc-minilm")["spec"]["workers"]["replicas"] == 3
    done = kubectl("scale", "trainingjob/bbc-minilm", "-n", namespace, "--replicas=9", check=False)
    assert done.returncode != 0
    assert "spec.workers.replicas must be between" in done.stderr


STATUS: dict[str, Any] = {
    "observedGeneration": 1,
    "phase": "Running",
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Training",
            "message": "3 of 2-4 workers running",
            "lastTransitionTime": "2025-01-01T00:00:00Z",
            "observedGeneration": 1,
        }
    ],
    "selector": "sparsam.dev/trainingjob=bbc-minilm",
    "workers": {"desired": 3, "running": 3},
    "preemptions": 2,
    "restarts": 0,
    "lastCheckpoint": {"step": 1200, "time": "2025-01-01T00:10:00Z", "path": "/checkpoints/1200"},
    "checkpointInterval": {
        "seconds": 420,
        "mode": "Auto",
        "writeSeconds": 12.5,
        "meanTimeBetweenPreemptionsSeconds": 7200.0,
        "message": "sqrt(2 x 12.5s x 7200s)",
    },
    "cost": {"accrued": 1.25, "onDemandEquivalent": 4.1, "savingsRatio": 0.7, "gpuSeconds": 5400},
    "compression": {
        "sizeBytes": {"before": 90_900_000, "after": 23_100_000},
        "accuracy": {"before": 0.962, "after": 0.958},
        "latencyMs": {"before": 4.95, "after": 2.98},
        "accepted": True,
    },
    "model": {"uri": "pvc://bbc-minilm-checkpoints/model"},
    "startTime": "2025-01-01T00:00:00Z",
}


def test_a_full_status_round_trips(kubectl: Kubectl, namespace: str) -> None:
    assert apply(kubectl, namespace, example()).returncode == 0
    kubectl(
        "patch",
        "trainingjob/bbc-minilm",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": STATUS}),
    )
    stored = read_back(kubectl, namespace, "bbc-minilm")
    assert stored["status"] == STATUS
    status = TrainingJob.from_body(stored).status
    assert status == TrainingJob.from_body({"spec": {"image": "x"}, "status": STATUS}).status
    # Reading /scale needs spec.workers.replicas set (the apiserver answers InternalError if not).
    kubectl("scale", "trainingjob/bbc-minilm", "-n", namespace, "--replicas=4")
    scale = json.loads(
        kubectl(
            "get", "trainingjob/bbc-minilm", "-n", namespace, "--subresource=scale", "-o", "json"
        ).stdout
    )
    assert scale["spec"] == {"replicas": 4}
    assert scale["status"] == {"replicas": 3, "selector": STATUS["selector"]}


def test_a_bad_status_is_rejected_naming_the_field(kubectl: Kubectl, namespace: str) -> None:
    assert apply(kubectl, namespace, example()).returncode == 0
    done = kubectl(
        "patch",
        "trainingjob/bbc-minilm",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Sleeping"}}),
        check=False,
    )
    assert done.returncode != 0
    assert "status.phase" in done.stderr
