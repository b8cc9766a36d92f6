"""The real apiserver rejects bad InferenceServices with a message that names the field.

Each case takes a valid manifest, breaks one field, applies it with kubectl and expects the
apiserver (OpenAPI schema or CEL rule of crds/sparsam.dev_inferenceservices.yaml) to refuse it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from tests.manifests import DELETE, with_field

from sparsam.api.inferenceservice import InferenceService

if TYPE_CHECKING:
    from tests.conftest import Kubectl

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RESOURCE = "inferenceservices.sparsam.dev"


def valid() -> dict[str, Any]:
    return {
        "apiVersion": "sparsam.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "classifier"},
        "spec": {
            "model": {"uri": "pvc://models/classifier", "format": "pytorch"},
            "resources": {"gpus": 1, "gpuType": "NVIDIA-A10G", "cpu": "2", "memory": "4Gi"},
            "replicas": {"min": 0, "max": 3},
            "scaling": {
                "metric": "rps",
                "target": 20,
                "scaleToZeroAfter": "5m",
                "scaleDownDelay": "1m",
            },
            "capacity": {"spot": "Prefer", "onDemandBase": 1},
            "slo": {"p99LatencyMs": 100},
        },
    }


def apply(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> Any:
    return kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False)


def test_valid_manifest_is_accepted_and_defaulted(kubectl: Kubectl, namespace: str) -> None:
    """The base of every case below is valid, so each rejection is the broken field's doing."""
    manifest = valid()
    del manifest["spec"]["scaling"]
    apply(kubectl, namespace, manifest).check_returncode()
    got = kubectl("get", RESOURCE, "classifier", "-n", namespace, "-o", "json")
    body = json.loads(got.stdout)
    assert body["spec"]["scaling"] == {
        "metric": "rps",
        "target": 10,
        "scaleToZeroAfter": "5m",
        "scaleDownDelay": "1m",
    }
    assert InferenceService.from_body(body).spec.replicas.max == 3


def test_values_at_the_bounds_are_accepted_and_parse(kubectl: Kubectl, namespace: str) -> None:
    manifest = valid()
    manifest["spec"]["model"]["uri"] = "pvc://models/a..b/.../c"  # '..' inside names only
    manifest["spec"]["replicas"] = {"min": 1000, "max": 1000}
    manifest["spec"]["capacity"]["onDemandBase"] = 1000
    manifest["spec"]["resources"].update(gpus=16, cpu="1Ki", memory="16384Gi")
    manifest["spec"]["slo"]["p99LatencyMs"] = 3_600_000
    manifest["spec"]["scaling"].update(
        target=1_000_000, scaleToZeroAfter="720h", scaleDownDelay="719h60m"
    )
    apply(kubectl, namespace, manifest).check_returncode()
    got = kubectl("get", RESOURCE, "classifier", "-n", namespace, "-o", "json")
    service = InferenceService.from_body(json.loads(got.stdout))
    assert service.spec.replicas.max == 1000
    assert service.spec.scaling.scale_down_delay == timedelta(hours=720)


def test_example_applies(kubectl: Kubectl, namespace: str) -> None:
    example = (ROOT / "examples" / "inferenceservice.yaml").read_text()
    kubectl("apply", "-n", namespace, "-f", "-", input=example)
    got = kubectl("get", RESOURCE, "bbc-news-classifier", "-n", namespace, "-o", "json")
    assert InferenceService.from_body(json.loads(got.stdout)).spec.replicas.min == 0


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        pytest.param(
            "spec.replicas",
            {"min": 3, "max": 2},
            "spec.replicas.min must be less than or equal to spec.replicas.max",
            id="replicas-min-above-max",
        ),
        pytest.param("spec.replicas.min", -1, "spec.replicas.min", id="replicas-min-negative"),
        pytest.param("spec.replicas.max", 0, "spec.replicas.max", id="replicas-max-zero"),
        pytest.param("spec.scaling.metric", "qps", "spec.scaling.metric", id="metric-unknown"),
        pytest.param("spec.scaling.target", 0, "spec.scaling.target", id="target-zero"),
        # Found by test_fuzz_schemas: load / 5e-324 is infinite, and ceil() of it raised.
        pytest.param(
            "spec.scaling.target",
            5e-324,
            "spec.scaling.target must be at least 0.001",
            id="target-tiny",
        ),
        pytest.param(
            "spec.scaling.scaleToZeroAfter",
            "5 minutes",
            "spec.scaling.scaleToZeroAfter must be a duration",
            id="scale-to-zero-after-not-duration",
        ),
        pytest.param(
            "spec.scaling.scaleDownDelay",
            "60",
            "spec.scaling.scaleDownDelay must be a duration",
            id="scale-down-delay-without-unit",
        ),
        pytest.param("spec.capacity.spot", "Always", "spec.capacity.spot", id="spot-unknown"),
        pytest.param(
            "spec.capacity.onDemandBase",
            4,
            "spec.capacity.onDemandBase must be less than or equal to spec.replicas.max",
            id="on-demand-base-above-max",
        ),
        pytest.param(
            "spec.capacity",
            {"spot": "Require", "onDemandBase": 1},
            "spec.capacity.onDemandBase must be 0 when spec.capacity.spot is Require",
            id="on-demand-base-with-spot-required",
        ),
        pytest.param("spec.slo.p99LatencyMs", 0, "spec.slo.p99LatencyMs", id="slo-zero"),
        pytest.param("spec.model.uri", DELETE, "spec.model.uri", id="model-uri-missing"),
        pytest.param("spec.model.uri", "", "spec.model.uri", id="model-uri-empty"),
        pytest.param(
            "spec.model.uri",
            "s3://bucket/classifier",
            "spec.model.uri must be pvc://",
            id="model-uri-not-pvc",
        ),
        pytest.param("spec.model.format", "pickle", "spec.model.format", id="format-unknown"),
        pytest.param("spec.resources.cpu", "two", "spec.resources.cpu", id="cpu-not-quantity"),
        pytest.param(
            "spec.resources",
            {"gpus": 0, "gpuType": "NVIDIA-A10G"},
            "spec.resources.gpuType requires spec.resources.gpus",
            id="gpu-type-without-gpus",
        ),
        pytest.param(
            "metadata.name", "9-lives", "metadata.name in body should match", id="name-not-dns-1035"
        ),
        # Upper bounds: counts, numbers and durations (also beyond int32 and Go's range).
        pytest.param(
            "spec.replicas.max", 2**31 - 1, "spec.replicas.max: Invalid value", id="max-2**31 - 1"
        ),
        pytest.param(
            "spec.replicas.max",
            3_000_000_000,
            "spec.replicas.max: Invalid value",
            id="max-3_000_000_000",
        ),
        pytest.param("spec.replicas.min", 1001, "spec.replicas.min: Invalid value", id="min-1001"),
        pytest.param(
            "spec.capacity.onDemandBase",
            1001,
            "spec.capacity.onDemandBase: Invalid value",
            id="onDemandBase-1001",
        ),
        pytest.param("spec.resources.gpus", 17, "spec.resources.gpus: Invalid value", id="gpus-17"),
        pytest.param(
            "spec.scaling.target", 1e7, "spec.scaling.target: Invalid value", id="target-1e7"
        ),
        pytest.param(
            "spec.slo.p99LatencyMs",
            1e10,
            "spec.slo.p99LatencyMs: Invalid value",
            id="p99LatencyMs-1e10",
        ),
        pytest.param(
            "spec.scaling.scaleToZeroAfter",
            "721h",
            "spec.scaling.scaleToZeroAfter must be at most 720h",
            id="scaleToZeroAfter-721h",
        ),
        pytest.param(
            "spec.scaling.scaleToZeroAfter",
            "999999999999h",
            "spec.scaling.scaleToZeroAfter must be at most 720h",
            id="scaleToZeroAfter-999999999999h",
        ),
        pytest.param(
            "spec.scaling.scaleToZeroAfter",
            "172800000s",
            "spec.scaling.scaleToZeroAfter must be at most 720h",
            id="scaleToZeroAfter-172800000s",
        ),
        pytest.param(
            "spec.scaling.scaleDownDelay",
            "721h",
            "spec.scaling.scaleDownDelay must be at most 720h",
            id="scaleDownDelay-721h",
        ),
        pytest.param(
            "spec.scaling.scaleDownDelay",
            "999999999999h",
            "spec.scaling.scaleDownDelay must be at most 720h",
            id="scaleDownDelay-999999999999h",
        ),
        pytest.param(
            "spec.scaling.scaleDownDelay",
            "172800000s",
            "spec.scaling.scaleDownDelay must be at most 720h",
            id="scaleDownDelay-172800000s",
        ),
        *[
            pytest.param(
                "spec.model.uri",
                uri,
                "spec.model.uri must not contain '..' path segments",
                id=f"model-uri-dot-segments-{i}",
            )
            for i, uri in enumerate(
                ["pvc://claim/../../..", "pvc://models/a/../../etc", "pvc://m/.."]
            )
        ],
        pytest.param(
            "spec.resources.cpu", "2k", "spec.resources.cpu must be at most 1024", id="cpu-2k"
        ),
        pytest.param(
            "spec.resources.memory",
            "100Ti",
            "spec.resources.memory must be at most 16Ti",
            id="memory-100Ti",
        ),
    ],
)
def test_bad_input_is_rejected_naming_the_field(
    kubectl: Kubectl, namespace: str, path: str, value: Any, expected: str
) -> None:
    result = apply(kubectl, namespace, with_field(valid(), path, value))
    assert result.returncode != 0, f"the apiserver accepted {path}={value!r}"
    assert expected in result.stderr
