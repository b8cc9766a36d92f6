"""What an InferenceService runs as: one or two Deployments of the model server, and a Service.

Pure builders (dicts in the shape the apiserver takes):

- `deployment_manifests`: the replicas split by `decisions.scaling.spot_split`. `<name>` runs
  the replicas placed by the service's spot policy (Prefer: on spot when there is room,
  Require: only on spot, Never: never on spot). With `capacity.onDemandBase` > 0 (and spot
  allowed), `<name>-on-demand` runs the first onDemandBase replicas on nodes that are not spot,
  so a spot reclaim never takes the last replica. Under Prefer both always exist (a track with
  no replicas is a Deployment at 0), so moving replicas between them never deletes anything;
  the `sparsam.dev/track` label in each selector keeps their pods apart.
- `service_manifest`: `<name>`, ClusterIP, port 80 to the replicas' `http` port, for
  in-cluster clients that call ready replicas directly. The address that also answers at zero
  replicas is the activator's (`status.url`).

Each replica runs `python -m sparsam_trainer serve` on port 8080 (`http`) with the model from
`spec.model.uri` (`pvc://<claim>/<path>`: the claim is mounted read-only at /models), is ready
when /readyz says the model is loaded and warmed, is labelled with the service's name (the
activator and the cost meter find replicas by it) and its team labels, and meets Pod Security
"restricted".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from sparsam.api import constants as c
from sparsam.api.common import SpotPolicy
from sparsam.api.inferenceservice import InferenceService
from sparsam.decisions.effective_policy import NO_POLICY, choose_spot
from sparsam.kube.pods import (
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    Placement,
    passed_labels,
    resources,
)

HTTP_PORT: Final = 8080
MODEL_ROOT: Final = "/models"
#: The server drains in-flight requests on SIGTERM; this bounds how long it may take.
TERMINATION_GRACE_SECONDS: Final = 30
#: The suffix of the Deployment that runs the on-demand base.
ON_DEMAND_SUFFIX: Final = "-on-demand"
#: Formats the sparsam server loads (a sparsam export is TorchScript plus its manifest).
SERVED_FORMATS: Final = frozenset({"pytorch", "torchscript"})


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Operator-wide: the model-server image used when spec.image is unset."""

    image: str = "ghcr.io/sparsam/sparsam-trainer:0.1.0"


def model_location(uri: str) -> tuple[str, str]:
    """(claim, path inside it) of a `pvc://<claim>/<path>` URI (the CRD checks the shape)."""
    rest = uri.removeprefix("pvc://")
    claim, _, path = rest.partition("/")
    return claim, path.strip("/")


def model_dir(uri: str) -> str:
    """Where a replica finds the model: the claim's mount plus the path."""
    _, path = model_location(uri)
    return f"{MODEL_ROOT}/{path}" if path else MODEL_ROOT


def owner_reference(svc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.INFERENCE_SERVICE.kind,
        "name": svc.metadata.name,
        "uid": svc.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_labels(svc: InferenceService) -> dict[str, str]:
    return {c.LABEL_INFERENCE_SERVICE: svc.metadata.name}


def server_command(svc: InferenceService) -> list[str]:
    return [
        "python",
        "-m",
        "sparsam_trainer",
        "serve",
        "--model-dir",
        model_dir(svc.spec.model.uri),
        "--port",
        str(HTTP_PORT),
    ]


def _pod_template(
    svc: InferenceService,
    track: str,
    spot: SpotPolicy,
    placement: Placement,
    settings: ServerSettings,
) -> dict[str, Any]:
    spec = svc.spec
    claim, _ = model_location(spec.model.uri)
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2}
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.image or settings.image,
        "command": server_command(svc),
        "ports": [{"name": "http", "containerPort": HTTP_PORT}],
        "readinessProbe": probe,
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": resources(spec.resources.gpus, spec.resources.cpu, spec.resources.memory),
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_ROOT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, the pod's own
        ],
        "securityContext": dict(RESTRICTED_CONTAINER),
    }
    labels = {
        **passed_labels(svc.metadata.labels),
        c.LABEL_MANAGED_BY: c.FIELD_MANAGER,
        c.LABEL_SPOT_POLICY: spot,
        c.LABEL_TRACK: track,
        **selector_labels(svc),
    }
    return {
        "metadata": {"labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": dict(RESTRICTED_POD),
            "containers": [container],
            "volumes": [
                {
                    "name": "model",
                    "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
                },
                {"name": "tmp", "emptyDir": {}},
            ],
            **placement.pod_fields(spec.resources.gpus, spec.resources.gpu_type, spot),
        },
    }


def _deployment(
    svc: InferenceService,
    track: str,
    replicas: int,
    spot: SpotPolicy,
    placement: Placement,
    settings: ServerSettings,
) -> dict[str, Any]:
    name = svc.metadata.name + (ON_DEMAND_SUFFIX if track == c.TRACK_ON_DEMAND_BASE else "")
    template = _pod_template(svc, track, spot, placement, settings)
    # The digest covers everything but the replica count, which changes far more often.
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": svc.metadata.namespace,
            "labels": {c.LABEL_MANAGED_BY: c.FIELD_MANAGER, **selector_labels(svc)},
            "annotations": {c.ANNOTATION_APPLIED: digest},
            "ownerReferences": [owner_reference(svc)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {**selector_labels(svc), c.LABEL_TRACK: track}},
            # A new replica is ready before an old one goes: a rollout never drops to zero.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
            "template": template,
        },
    }


def deployment_manifests(
    svc: InferenceService,
    on_demand: int,
    by_policy: int,
    placement: Placement | None = None,
    settings: ServerSettings | None = None,
    spot: SpotPolicy | None = None,
) -> list[dict[str, Any]]:
    """The Deployments for `on_demand` base replicas and `by_policy` replicas placed by the
    spot policy (`decisions.scaling.spot_split`). Spot Never and Require have one track.
    `spot` is the spot policy in force (`decisions.effective_policy.choose_spot`); None: the
    service's own, else Prefer (as where no CostPolicy governs)."""
    where = placement or Placement()
    config = settings or ServerSettings()
    spot = spot or choose_spot(svc.spec.capacity.spot, NO_POLICY).policy
    main = c.TRACK_MAIN
    if spot != "Prefer":
        return [_deployment(svc, main, on_demand + by_policy, spot, where, config)]
    base = c.TRACK_ON_DEMAND_BASE
    return [
        _deployment(svc, main, by_policy, "Prefer", where, config),
        _deployment(svc, base, on_demand, "Never", where, config),
    ]


def service_manifest(svc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": svc.metadata.name,
            "namespace": svc.metadata.namespace,
            "labels": {c.LABEL_MANAGED_BY: c.FIELD_MANAGER, **selector_labels(svc)},
            "ownerReferences": [owner_reference(svc)],
        },
        "spec": {
            "selector": selector_labels(svc),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
