"""The model-server Deployments and Service an InferenceService runs as, field by field."""

from __future__ import annotations

from typing import Any

import pytest

from sparsam.api.inferenceservice import InferenceService
from sparsam.kube.inferenceservice import (
    ServerSettings,
    deployment_manifests,
    model_location,
    service_manifest,
)
from sparsam.kube.pods import Placement


def service(**spec: Any) -> InferenceService:
    return InferenceService.from_body(
        {
            "metadata": {
                "name": "clf",
                "namespace": "web",
                "uid": "u1",
                "labels": {"team": "news", "sparsam.dev/x": "dropped"},
            },
            "spec": {"model": {"uri": "pvc://models/exports/clf"}, **spec},
        }
    )


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        pytest.param("pvc://models/a/b", ("models", "a/b"), id="nested"),
        pytest.param("pvc://models", ("models", ""), id="whole-claim"),
        pytest.param("pvc://models/a/", ("models", "a"), id="trailing-slash"),
    ],
)
def test_model_location(uri: str, expected: tuple[str, str]) -> None:
    assert model_location(uri) == expected


def test_the_server_pod_is_restricted_mounts_the_model_and_is_ready_from_readyz() -> None:
    main = deployment_manifests(service(), 0, 2, settings=ServerSettings(image="img:1"))[0]
    assert main["metadata"]["name"] == "clf" and main["spec"]["replicas"] == 2
    pod = main["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "img:1"
    assert container["command"][-4:] == ["--model-dir", "/models/exports/clf", "--port", "8080"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    claim = next(v for v in pod["volumes"] if v["name"] == "model")
    assert claim["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    labels = main["spec"]["template"]["metadata"]["labels"]
    assert labels["sparsam.dev/inference-service"] == "clf" and labels["team"] == "news"
    assert "sparsam.dev/x" not in labels
    assert main["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"


@pytest.mark.parametrize(
    ("capacity", "tracks"),
    [
        pytest.param({}, {"clf": ("Prefer", 3), "clf-on-demand": ("Never", 1)}, id="prefer"),
        pytest.param({"spot": "Never"}, {"clf": ("Never", 4)}, id="never"),
        pytest.param({"spot": "Require"}, {"clf": ("Require", 4)}, id="require"),
    ],
)
def test_tracks_by_spot_policy(capacity: dict[str, Any], tracks: dict[str, Any]) -> None:
    made = deployment_manifests(service(capacity=capacity), 1, 3)
    found = {
        m["metadata"]["name"]: (
            m["spec"]["template"]["metadata"]["labels"]["sparsam.dev/spot"],
            m["spec"]["replicas"],
        )
        for m in made
    }
    assert found == tracks
    selectors = [m["spec"]["selector"]["matchLabels"]["sparsam.dev/track"] for m in made]
    assert len(set(selectors)) == len(selectors)


def test_the_on_demand_base_requires_a_node_that_is_not_spot() -> None:
    base = deployment_manifests(service(), 1, 0)[1]
    affinity = base["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {e["operator"] for e in terms[0]["matchExpressions"]} == {"NotIn"}


def test_the_digest_ignores_replicas_but_not_the_template() -> None:
    def digest(svc: InferenceService, replicas: int) -> str:
        annotations = deployment_manifests(svc, 0, replicas)[0]["metadata"]["annotations"]
        return str(annotations["sparsam.dev/applied"])

    assert digest(service(), 1) == digest(service(), 3)
    assert digest(service(), 1) != digest(service(image="other:2"), 1)
    placed = deployment_manifests(service(), 0, 1, Placement(allowed_gpu_types=("L4",)))[0]
    assert (
        placed["metadata"]["annotations"]
        != deployment_manifests(service(), 0, 1)[0]["metadata"]["annotations"]
    )


def test_the_service_selects_every_replica_on_port_80() -> None:
    svc = service_manifest(service())
    assert svc["spec"]["selector"] == {"sparsam.dev/inference-service": "clf"}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
