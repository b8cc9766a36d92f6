"""The compression spec: a TrainingJob's `spec.compression` object, read as the CRD defines it.

The operator hands the object through unchanged (JSON or YAML, camelCase field names). The
typed model is the operator's own (`sparsam.api.trainingjob.Compression` and its parts: one
distribution ships both packages, so the trainer image has it); this module adds what the
apiserver's CEL rules check for objects that came through Kubernetes (bounds, unknown fields),
for files a person wrote by hand, and each error names the field as the CRD spells it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import yaml

from sparsam.api.trainingjob import Compression as CompressionSpec
from sparsam.api.trainingjob import Distillation, Pruning, Quantization, QuantizationMode

__all__ = [
    "CompressionSpec",
    "Distillation",
    "Pruning",
    "Quantization",
    "SpecError",
    "load_spec",
    "parse_spec",
]

QUANTIZATION_MODES: tuple[QuantizationMode, ...] = ("dynamic", "static", "none")


class SpecError(ValueError):
    """The compression spec does not fit the CRD's schema; the message names the field."""


_FIELDS: dict[str, frozenset[str]] = {
    "spec.compression": frozenset({"pruning", "quantization", "distillation", "maxAccuracyDrop"}),
    "spec.compression.pruning": frozenset({"sparsity", "structured"}),
    "spec.compression.quantization": frozenset({"mode"}),
    "spec.compression.distillation": frozenset({"student", "temperature", "alpha", "epochs"}),
}


def _object(raw: object, path: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path} must be an object, got {type(raw).__name__}")
    unknown = sorted(str(key) for key in raw if key not in _FIELDS[path])
    if unknown:
        known = ", ".join(sorted(_FIELDS[path]))
        raise SpecError(f"{path} has unknown field(s) {', '.join(unknown)} (known: {known})")
    return cast(Mapping[str, Any], raw)


def _number(
    raw: Mapping[str, Any],
    key: str,
    path: str,
    default: float,
    *,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    value = raw.get(key, default)
    # bool is an int in Python; the CRD's `type: number` is not.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{path}.{key} must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise SpecError(f"{path}.{key} must be in {left}{low:g}, {high:g}{right}, got {value!r}")
    return float(value)


def parse_spec(raw: object) -> CompressionSpec:
    """Read a `spec.compression` object; SpecError names the first field that does not fit."""
    root = "spec.compression"
    body = _object(raw, root)
    pruning = quantization = distillation = None
    if body.get("pruning") is not None:
        path = f"{root}.pruning"
        section = _object(body["pruning"], path)
        structured = section.get("structured", False)
        if not isinstance(structured, bool):
            raise SpecError(f"{path}.structured must be true or false, got {structured!r}")
        sparsity = _number(section, "sparsity", path, 0.5, low=0.0, high=1.0, high_open=True)
        pruning = Pruning(sparsity=sparsity, structured=structured)
    if body.get("quantization") is not None:
        path = f"{root}.quantization"
        section = _object(body["quantization"], path)
        mode = section.get("mode", "dynamic")
        if mode not in QUANTIZATION_MODES:
            raise SpecError(
                f"{path}.mode must be one of {', '.join(QUANTIZATION_MODES)}, got {mode!r}"
            )
        quantization = Quantization(mode=mode)
    if body.get("distillation") is not None:
        path = f"{root}.distillation"
        section = _object(body["distillation"], path)
        student = section.get("student")
        if not isinstance(student, str) or not 1 <= len(student) <= 1024:
            raise SpecError(f"{path}.student must be a non-empty string, got {student!r}")
        epochs = section.get("epochs", 1)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise SpecError(f"{path}.epochs must be an integer >= 1, got {epochs!r}")
        distillation = Distillation(
            student=student,
            temperature=_number(
                section, "temperature", path, 2.0, low=0.0, high=1e9, low_open=True
            ),
            alpha=_number(section, "alpha", path, 0.5, low=0.0, high=1.0),
            epochs=epochs,
        )
    if pruning is None and quantization is None and distillation is None:
        raise SpecError(f"{root} must set at least one of pruning, quantization or distillation")
    return CompressionSpec(
        pruning=pruning,
        quantization=quantization,
        distillation=distillation,
        max_accuracy_drop=_number(body, "maxAccuracyDrop", root, 0.01, low=0.0, high=1.0),
    )


def load_spec(path: Path) -> CompressionSpec:
    """Read a spec file: JSON when it parses as JSON, YAML otherwise (YAML is a superset)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"cannot read the compression spec {path}: {error.strerror}") from None
    return spec_from_text(text, str(path))


def spec_from_text(text: str, source: str) -> CompressionSpec:
    """A spec from JSON or YAML text (`source` names it in errors). A whole TrainingJob, or
    its spec, is accepted too, so a manifest can be passed as it is."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"{source} is neither JSON nor YAML: {error}") from None
    if isinstance(raw, Mapping) and isinstance(raw.get("spec"), Mapping):
        raw = raw["spec"]
    if isinstance(raw, Mapping) and isinstance(raw.get("compression"), Mapping):
        raw = raw["compression"]
    return parse_spec(raw)
