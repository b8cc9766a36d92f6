"""The real apiserver rejects bad CostPolicies with a message that names the field.

Each case takes a valid manifest, breaks one field, applies it with kubectl and expects the
apiserver (OpenAPI schema or CEL rule of crds/sparsam.dev_costpolicies.yaml) to refuse it.
CostPolicy is cluster-scoped: objects get names unique to the test and are deleted after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from tests.manifests import DELETE, with_field

from sparsam.api.costpolicy import CostPolicy

if TYPE_CHECKING:
    from tests.conftest import Kubectl

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RESOURCE = "costpolicies.sparsam.dev"


@pytest.fixture
def name(cluster_scoped_name: Callable[[str, str], str]) -> str:
    """A cluster-wide unique name for this test's CostPolicy, deleted afterwards."""
    return cluster_scoped_name(RESOURCE, "policy")


def valid(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "sparsam.dev/v1alpha1",
        "kind": "CostPolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {
                "matchLabels": {"team": "newsroom"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}],
            },
            "priority": 10,
            "budget": {"monthly": 500, "alertAt": [0.5, 0.8, 1.0], "onExceeded": "BlockNew"},
            "spot": {"default": "Prefer", "onDemandFallbackAfter": "5m"},
            "scaleToZero": {"after": "10m"},
            "compression": {"required": True, "maxAccuracyDrop": 0.01},
            "checkpoint": {"maxLostWorkFraction": 0.05},
            "allowedGPUTypes": ["NVIDIA-A10G"],
        },
    }


def apply(kubectl: Kubectl, manifest: dict[str, Any]) -> Any:
    return kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)


def test_valid_manifest_is_accepted_and_defaulted(kubectl: Kubectl, name: str) -> None:
    """The base of every case below is valid, so each rejection is the broken field's doing."""
    manifest = valid(name)
    del manifest["spec"]["spot"]
    del manifest["spec"]["budget"]["alertAt"]
    apply(kubectl, manifest).check_returncode()
    body = json.loads(kubectl("get", RESOURCE, name, "-o", "json").stdout)
    assert body["spec"]["spot"] == {"default": "Prefer", "onDemandFallbackAfter": "5m"}
    assert body["spec"]["budget"]["alertAt"] == [0.8, 1.0]
    assert CostPolicy.from_body(body).spec.budget is not None


def test_values_at_the_bounds_are_accepted_and_parse(kubectl: Kubectl, name: str) -> None:
    manifest = valid(name)
    manifest["spec"]["namespaceSelector"] = {
        "matchLabels": {"kubernetes.io/metadata.name": "ml", "a" * 63: ""},
        "matchExpressions": [{"key": "example.com/env", "operator": "NotIn", "values": ["a.b_c"]}],
    }
    manifest["spec"]["budget"]["monthly"] = 1_000_000_000
    manifest["spec"]["spot"]["onDemandFallbackAfter"] = "720h"
    manifest["spec"]["scaleToZero"]["after"] = "43200m"
    apply(kubectl, manifest).check_returncode()
    body = json.loads(kubectl("get", RESOURCE, name, "-o", "json").stdout)
    policy = CostPolicy.from_body(body)
    assert policy.spec.spot.on_demand_fallback_after == timedelta(hours=720)
    assert policy.spec.scale_to_zero is not None
    assert policy.spec.scale_to_zero.after == timedelta(hours=720)


def test_example_applies(kubectl: Kubectl, name: str) -> None:
    example = yaml.safe_load((ROOT / "examples" / "costpolicy.yaml").read_text())
    example["metadata"]["name"] = name
    apply(kubectl, example).check_returncode()
    body = json.loads(kubectl("get", RESOURCE, name, "-o", "json").stdout)
    assert CostPolicy.from_body(body).spec.priority == 100


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        pytest.param(
            "spec.namespaceSelector", DELETE, "spec.namespaceSelector", id="selector-missing"
        ),
        pytest.param(
            "spec.namespaceSelector.matchExpressions",
            [{"key": "env", "operator": "Like", "values": ["prod"]}],
            "spec.namespaceSelector.matchExpressions[0].operator",
            id="selector-operator-unknown",
        ),
        pytest.param(
            "spec.namespaceSelector.matchExpressions",
            [{"key": "env", "operator": "In"}],
            "spec.namespaceSelector.matchExpressions[].values must be non-empty",
            id="selector-in-without-values",
        ),
        pytest.param("spec.priority", 5000, "spec.priority", id="priority-too-high"),
        pytest.param("spec.budget.monthly", -1, "spec.budget.monthly", id="budget-negative"),
        pytest.param(
            "spec.budget.alertAt", [0.5, 1.5], "spec.budget.alertAt[1]", id="alert-above-1"
        ),
        pytest.param("spec.budget.alertAt", [0, 0.5], "spec.budget.alertAt[0]", id="alert-zero"),
        pytest.param(
            "spec.budget.alertAt",
            [0.8, 0.5],
            "spec.budget.alertAt must be in ascending order",
            id="alert-unsorted",
        ),
        pytest.param(
            "spec.budget.alertAt", [0.5, 0.5], "spec.budget.alertAt[1]", id="alert-duplicate"
        ),
        pytest.param(
            "spec.budget.onExceeded", "Shutdown", "spec.budget.onExceeded", id="on-exceeded-unknown"
        ),
        pytest.param("spec.spot.default", "Sometimes", "spec.spot.default", id="spot-unknown"),
        pytest.param(
            "spec.spot.onDemandFallbackAfter",
            "soon",
            "spec.spot.onDemandFallbackAfter must be a duration",
            id="fallback-not-duration",
        ),
        pytest.param(
            "spec.scaleToZero.after",
            "10 minutes",
            "spec.scaleToZero.after must be a duration",
            id="scale-to-zero-not-duration",
        ),
        pytest.param(
            "spec.compression.maxAccuracyDrop",
            1.5,
            "spec.compression.maxAccuracyDrop",
            id="accuracy-drop-above-1",
        ),
        pytest.param(
            "spec.checkpoint.maxLostWorkFraction",
            0,
            "spec.checkpoint.maxLostWorkFraction",
            id="lost-work-zero",
        ),
        # Upper bounds: budgets and durations (also beyond Go's range).
        pytest.param(
            "spec.budget.monthly", 1e10, "spec.budget.monthly: Invalid value", id="monthly-1e10"
        ),
        pytest.param(
            "spec.priority", 2**31 - 1, "spec.priority: Invalid value", id="priority-2**31 - 1"
        ),
        pytest.param(
            "spec.spot.onDemandFallbackAfter",
            "721h",
            "spec.spot.onDemandFallbackAfter must be at most 720h",
            id="onDemandFallbackAfter-721h",
        ),
        pytest.param(
            "spec.spot.onDemandFallbackAfter",
            "999999999999h",
            "spec.spot.onDemandFallbackAfter must be at most 720h",
            id="onDemandFallbackAfter-999999999999h",
        ),
        pytest.param(
            "spec.spot.onDemandFallbackAfter",
            "172800000s",
            "spec.spot.onDemandFallbackAfter must be at most 720h",
            id="onDemandFallbackAfter-172800000s",
        ),
        pytest.param(
            "spec.scaleToZero.after",
            "721h",
            "spec.scaleToZero.after must be at most 720h",
            id="after-721h",
        ),
        pytest.param(
            "spec.scaleToZero.after",
            "999999999999h",
            "spec.scaleToZero.after must be at most 720h",
            id="after-999999999999h",
        ),
        pytest.param(
            "spec.scaleToZero.after",
            "172800000s",
            "spec.scaleToZero.after must be at most 720h",
            id="after-172800000s",
        ),
        # Selector keys and values Kubernetes would refuse.
        *[
            pytest.param(
                "spec.namespaceSelector.matchLabels",
                {key: "x"},
                "every key of spec.namespaceSelector.matchLabels must be a label key",
                id=f"match-labels-key-{i}",
            )
            for i, key in enumerate(["bad key", "a/b/c", "x" * 64, "a" * 254 + "/team"])
        ],
        pytest.param(
            "spec.namespaceSelector.matchLabels",
            {"team": "not ok!"},
            "spec.namespaceSelector.matchLabels.team",
            id="match-labels-value-bad",
        ),
        pytest.param(
            "spec.namespaceSelector.matchExpressions",
            [{"key": "bad key", "operator": "Exists"}],
            "spec.namespaceSelector.matchExpressions[].key must be a label key",
            id="match-expressions-key-bad",
        ),
        pytest.param(
            "spec.namespaceSelector.matchExpressions",
            [{"key": "env", "operator": "In", "values": ["not ok!"]}],
            "spec.namespaceSelector.matchExpressions[0].values[0]",
            id="match-expressions-value-bad",
        ),
    ],
)
def test_bad_input_is_rejected_naming_the_field(
    kubectl: Kubectl, name: str, path: str, value: Any, expected: str
) -> None:
    result = apply(kubectl, with_field(valid(name), path, value))
    assert result.returncode != 0, f"the apiserver accepted {path}={value!r}"
    assert expected in result.stderr
