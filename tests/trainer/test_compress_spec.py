"""The compress command reads a TrainingJob's spec.compression exactly as the CRD defines it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sparsam_trainer.compress.spec import (
    CompressionSpec,
    Distillation,
    Pruning,
    Quantization,
    SpecError,
    load_spec,
    parse_spec,
)

VALID: list[tuple[str, dict[str, Any], CompressionSpec]] = [
    (
        "defaults-filled-in",
        {"pruning": {}, "quantization": {}},
        CompressionSpec(pruning=Pruning(0.5, False), quantization=Quantization("dynamic")),
    ),
    (
        "everything",
        {
            "pruning": {"sparsity": 0.9, "structured": True},
            "quantization": {"mode": "static"},
            "distillation": {"student": "layers:3", "temperature": 4, "alpha": 0.7, "epochs": 2},
            "maxAccuracyDrop": 0,
        },
        CompressionSpec(
            pruning=Pruning(0.9, True),
            quantization=Quantization("static"),
            distillation=Distillation("layers:3", 4.0, 0.7, 2),
            max_accuracy_drop=0.0,
        ),
    ),
    (
        "distillation-only",
        {"distillation": {"student": "auto"}},
        CompressionSpec(distillation=Distillation("auto", 2.0, 0.5, 1)),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_parses_what_the_crd_allows(raw: dict[str, Any], expected: CompressionSpec) -> None:
    assert parse_spec(raw) == expected
    # The report's copy of the spec reads back to the same spec.
    assert parse_spec(expected.to_raw()) == expected


INVALID: list[tuple[str, object, str]] = [
    ("not-an-object", ["pruning"], "spec.compression must be an object, got list"),
    ("nothing-set", {"maxAccuracyDrop": 0.1}, "must set at least one of pruning"),
    ("unknown-field", {"pruning": {"amount": 0.5}}, "spec.compression.pruning has unknown field"),
    ("sparsity-one", {"pruning": {"sparsity": 1.0}}, "spec.compression.pruning.sparsity must be"),
    ("sparsity-text", {"pruning": {"sparsity": "half"}}, "sparsity must be a number"),
    ("sparsity-bool", {"pruning": {"sparsity": True}}, "sparsity must be a number"),
    ("structured-text", {"pruning": {"structured": "yes"}}, "structured must be true or false"),
    ("mode-unknown", {"quantization": {"mode": "fp4"}}, "mode must be one of dynamic, static"),
    ("student-empty", {"distillation": {"student": ""}}, "student must be a non-empty string"),
    ("student-missing", {"distillation": {}}, "student must be a non-empty string"),
    ("epochs-zero", {"distillation": {"student": "auto", "epochs": 0}}, "epochs must be an"),
    ("temperature-zero", {"distillation": {"student": "a", "temperature": 0}}, "temperature"),
    ("alpha-above-one", {"distillation": {"student": "a", "alpha": 1.5}}, "alpha must be in"),
    ("budget-negative", {"quantization": {}, "maxAccuracyDrop": -0.1}, "maxAccuracyDrop must"),
]


@pytest.mark.parametrize(("raw", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_rejects_with_the_field_named(raw: object, message: str) -> None:
    with pytest.raises(SpecError, match=r"^spec\.compression") as error:
        parse_spec(raw)
    assert message in str(error.value)


FILES: list[tuple[str, str, str]] = [
    ("json", "spec.json", json.dumps({"quantization": {"mode": "static"}})),
    ("yaml", "spec.yaml", "quantization:\n  mode: static\n"),
    (
        "trainingjob-manifest",
        "tj.yaml",
        "apiVersion: sparsam.dev/v1alpha1\nkind: TrainingJob\nspec:\n"
        "  compression:\n    quantization: {mode: static}\n",
    ),
]


@pytest.mark.parametrize(("name", "text"), [c[1:] for c in FILES], ids=[c[0] for c in FILES])
def test_loads_json_yaml_and_manifests(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert load_spec(path) == CompressionSpec(quantization=Quantization("static"))


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the compression spec"):
        load_spec(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("pruning: [unclosed\n")
    with pytest.raises(SpecError, match="neither JSON nor YAML"):
        load_spec(broken)
