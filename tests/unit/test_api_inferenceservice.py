"""InferenceService model: the example parses, defaults match the CRD, bad input names its field."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.manifests import DELETE, with_field

from sparsam.api.conditions import Condition
from sparsam.api.inferenceservice import (
    SLO,
    Capacity,
    InferenceService,
    InferenceServiceSpec,
    Model,
    Replicas,
    Resources,
    Scaling,
)
from sparsam.api.parse import InvalidSpec, Quantity

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "inferenceservice.yaml"

MINIMAL: dict[str, Any] = {
    "apiVersion": "sparsam.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 2},
    "spec": {"model": {"uri": "pvc://models/m"}},
}


def _example() -> InferenceService:
    return InferenceService.from_body(yaml.safe_load(EXAMPLE.read_text()))


EXAMPLE_FIELDS: list[tuple[str, object]] = [
    ("metadata.name", "bbc-news-classifier"),
    ("spec.model", Model(uri="pvc://models/bbc-news-classifier", format="pytorch")),
    ("spec.resources.gpu_type", "NVIDIA-A10G"),
    ("spec.resources.cpu", Quantity(2)),
    ("spec.resources.memory", Quantity(4 * 2**30)),
    ("spec.replicas", Replicas(min=0, max=4)),
    ("spec.scaling.target", 50.0),
    ("spec.scaling.scale_to_zero_after", timedelta(minutes=5)),
    ("spec.scaling.scale_down_delay", timedelta(minutes=2)),
    ("spec.capacity", Capacity(spot="Prefer", on_demand_base=0)),
    ("spec.slo", SLO(p99_latency_ms=50.0)),
]


@pytest.mark.parametrize(
    ("attribute", "expected"), EXAMPLE_FIELDS, ids=[attribute for attribute, _ in EXAMPLE_FIELDS]
)
def test_example_parses(attribute: str, expected: object) -> None:
    value: Any = _example()
    for part in attribute.split("."):
        value = getattr(value, part)
    assert value == expected


def test_example_has_no_namespace() -> None:
    # The integration tests and users apply it with -n.
    assert "namespace" not in yaml.safe_load(EXAMPLE.read_text())["metadata"]


def test_minimal_body_gets_the_crd_defaults() -> None:
    service = InferenceService.from_body(MINIMAL)
    assert (
        service.metadata.name,
        service.metadata.namespace,
        service.metadata.uid,
        service.metadata.generation,
    ) == (
        "m",
        "ns",
        "u-1",
        2,
    )
    assert service.spec == InferenceServiceSpec(
        model=Model(uri="pvc://models/m", format="pytorch"),
        image=None,
        resources=Resources(gpus=1, gpu_type=None, cpu=Quantity(1), memory=Quantity(2 * 2**30)),
        replicas=Replicas(min=0, max=1),
        scaling=Scaling(
            metric="rps",
            target=10.0,
            scale_to_zero_after=timedelta(minutes=5),
            scale_down_delay=timedelta(minutes=1),
        ),
        capacity=Capacity(spot=None, on_demand_base=0),
        slo=None,
    )
    assert service.status.phase is None
    assert service.status.conditions == ()


def test_status_parses() -> None:
    body = copy.deepcopy(MINIMAL)
    body["status"] = {
        "observedGeneration": 2,
        "phase": "ScaledToZero",
        "replicas": 0,
        "readyReplicas": 0,
        "url": "http://m.ns.svc.cluster.local",
        "lastRequestTime": "2025-01-01T00:00:00Z",
        "lastColdStartSeconds": 3.5,
        "cost": {"accrued": 1.5, "onDemandEquivalent": 3, "savingsRatio": 0.5, "gpuSeconds": 900},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "ScaledToZero",
                "message": "",
                "lastTransitionTime": "2025-01-01T00:05:00Z",
                "observedGeneration": 2,
            }
        ],
    }
    status = InferenceService.from_body(body).status
    assert status.phase == "ScaledToZero"
    assert status.cost is not None
    assert status.cost.on_demand_equivalent == 3.0
    assert status.conditions == (
        Condition(
            type="Ready",
            status="True",
            last_transition_time="2025-01-01T00:05:00Z",
            reason="ScaledToZero",
            message="",
            observed_generation=2,
        ),
    )


@pytest.mark.parametrize(
    ("path", "value", "expected_path"),
    [
        pytest.param("spec.model", None, "spec.model", id="model-missing"),
        pytest.param("spec.model.uri", None, "spec.model.uri", id="uri-missing"),
        pytest.param("spec.model.format", "pickle", "spec.model.format", id="format-unknown"),
        pytest.param("spec.replicas.min", "1", "spec.replicas.min", id="min-not-int"),
        pytest.param("spec.scaling.metric", "qps", "spec.scaling.metric", id="metric-unknown"),
        pytest.param(
            "spec.scaling.scaleToZeroAfter",
            "5 minutes",
            "spec.scaling.scaleToZeroAfter",
            id="scale-to-zero-after-not-duration",
        ),
        pytest.param("spec.resources.cpu", "lots", "spec.resources.cpu", id="cpu-not-quantity"),
        pytest.param("spec.capacity.spot", "Always", "spec.capacity.spot", id="spot-unknown"),
        pytest.param("spec.slo", {}, "spec.slo.p99LatencyMs", id="slo-without-p99"),
        pytest.param(
            "spec.scaling.scaleToZeroAfter",
            "999999999999h",
            "spec.scaling.scaleToZeroAfter",
            id="scale-to-zero-after-beyond-bound",
        ),
        pytest.param("spec.replicas.max", 3_000_000_000, "spec.replicas.max", id="max-huge"),
        pytest.param("spec.slo.p99LatencyMs", 10**400, "spec.slo.p99LatencyMs", id="slo-no-float"),
        pytest.param(
            "spec.model.uri", "pvc://claim/../../..", "spec.model.uri", id="uri-dot-segments"
        ),
        pytest.param("status.phase", "Sleeping", "status.phase", id="phase-unknown"),
        pytest.param(
            "status.conditions",
            [{"type": "Ready", "status": "True"}],
            "status.conditions[0].reason",
            id="condition-incomplete",
        ),
    ],
)
def test_invalid_body_names_the_field(path: str, value: Any, expected_path: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        InferenceService.from_body(with_field(MINIMAL, path, DELETE if value is None else value))
    assert caught.value.path == expected_path
