"""CostPolicy model: the example parses, defaults match the CRD, bad input names its field."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparsam.api.costpolicy import (
    Budget,
    Checkpoint,
    Compression,
    CostPolicy,
    CostPolicySpec,
    LabelSelector,
    LabelSelectorRequirement,
    Period,
    ScaleToZero,
    Spot,
)
from sparsam.api.parse import InvalidSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "costpolicy.yaml"

MINIMAL: dict[str, Any] = {
    "apiVersion": "sparsam.dev/v1alpha1",
    "kind": "CostPolicy",
    "metadata": {"name": "default", "uid": "u-1", "generation": 1},
    "spec": {"namespaceSelector": {}},
}

EXAMPLE_FIELDS: list[tuple[str, object]] = [
    ("metadata.name", "team-newsroom"),
    ("spec.namespace_selector", LabelSelector(match_labels={"team": "newsroom"})),
    ("spec.priority", 100),
    ("spec.budget", Budget(monthly=2000.0, alert_at=(0.5, 0.8, 1.0), on_exceeded="BlockNew")),
    ("spec.spot", Spot(default="Prefer", on_demand_fallback_after=timedelta(minutes=5))),
    ("spec.scale_to_zero", ScaleToZero(after=timedelta(minutes=10))),
    ("spec.compression", Compression(required=True, max_accuracy_drop=0.01)),
    ("spec.checkpoint", Checkpoint(max_lost_work_fraction=0.05)),
    ("spec.allowed_gpu_types", ("NVIDIA-A10G", "NVIDIA-L40S")),
]


@pytest.mark.parametrize(
    ("attribute", "expected"), EXAMPLE_FIELDS, ids=[attribute for attribute, _ in EXAMPLE_FIELDS]
)
def test_example_parses(attribute: str, expected: object) -> None:
    value: Any = CostPolicy.from_body(yaml.safe_load(EXAMPLE.read_text()))
    for part in attribute.split("."):
        value = getattr(value, part)
    assert value == expected


def test_minimal_body_gets_the_crd_defaults() -> None:
    policy = CostPolicy.from_body(MINIMAL)
    assert (policy.metadata.name, policy.metadata.uid, policy.metadata.generation) == (
        "default",
        "u-1",
        1,
    )
    assert policy.spec == CostPolicySpec(
        namespace_selector=LabelSelector(match_labels=None, match_expressions=None),
        priority=0,
        budget=None,
        spot=Spot(default="Prefer", on_demand_fallback_after=timedelta(minutes=5)),
        scale_to_zero=None,
        compression=None,
        checkpoint=None,
        allowed_gpu_types=None,
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            {"budget": {"monthly": 100}},
            Budget(monthly=100.0, alert_at=(0.8, 1.0), on_exceeded="Alert"),
            id="budget",
        ),
        pytest.param({"compression": {}}, Compression(required=False), id="compression"),
    ],
)
def test_nested_defaults(spec: dict[str, Any], expected: object) -> None:
    body = copy.deepcopy(MINIMAL)
    body["spec"].update(spec)
    parsed = CostPolicy.from_body(body).spec
    (key,) = spec
    assert getattr(parsed, key) == expected


def test_selector_and_status_parse() -> None:
    body = copy.deepcopy(MINIMAL)
    body["spec"]["namespaceSelector"] = {
        "matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]
    }
    body["status"] = {
        "spent": 12.5,
        "period": {"start": "2025-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"},
        "matchedNamespaces": ["a", "b"],
    }
    policy = CostPolicy.from_body(body)
    assert policy.spec.namespace_selector.match_expressions == (
        LabelSelectorRequirement(key="team", operator="In", values=("a", "b")),
    )
    assert policy.status.spent == 12.5
    assert policy.status.period == Period(start="2025-01-01T00:00:00Z", end="2025-02-01T00:00:00Z")
    assert policy.status.matched_namespaces == ("a", "b")


@pytest.mark.parametrize(
    ("spec", "expected_path"),
    [
        pytest.param({"namespaceSelector": None}, "spec.namespaceSelector", id="selector-missing"),
        pytest.param(
            {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Like"}]}},
            "spec.namespaceSelector.matchExpressions[0].operator",
            id="selector-operator-unknown",
        ),
        pytest.param({"budget": {}}, "spec.budget.monthly", id="budget-monthly-missing"),
        pytest.param(
            {"budget": {"monthly": 1, "alertAt": ["half"]}},
            "spec.budget.alertAt[0]",
            id="alert-at-not-number",
        ),
        pytest.param(
            {"budget": {"monthly": 1, "onExceeded": "Shutdown"}},
            "spec.budget.onExceeded",
            id="on-exceeded-unknown",
        ),
        pytest.param(
            {"spot": {"onDemandFallbackAfter": "soon"}},
            "spec.spot.onDemandFallbackAfter",
            id="fallback-not-duration",
        ),
        pytest.param({"scaleToZero": {}}, "spec.scaleToZero.after", id="scale-to-zero-missing"),
        pytest.param(
            {"spot": {"onDemandFallbackAfter": "999999999999h"}},
            "spec.spot.onDemandFallbackAfter",
            id="fallback-beyond-bound",
        ),
        pytest.param({"budget": {"monthly": 1e10}}, "spec.budget.monthly", id="budget-huge"),
        pytest.param(
            {"allowedGPUTypes": "NVIDIA-A10G"}, "spec.allowedGPUTypes", id="gpus-not-list"
        ),
    ],
)
def test_invalid_body_names_the_field(spec: dict[str, Any], expected_path: str) -> None:
    body = copy.deepcopy(MINIMAL)
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key)
        else:
            body["spec"][key] = value
    with pytest.raises(InvalidSpec) as caught:
        CostPolicy.from_body(body)
    assert caught.value.path == expected_path
