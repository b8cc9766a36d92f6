"""Applying what an InferenceService runs as (manifests from `kube.inferenceservice`).

Deployments and the Service are server-side applied as field manager `sparsam`, forced: we
own them, and the replica count is ours (there is no HorizontalPodAutoscaler beside us).
"""

from __future__ import annotations

from typing import Any, cast

from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from sparsam.api import constants as c
from sparsam.kube.errors import refused

_APPLY: dict[str, Any] = {
    "field_manager": c.FIELD_MANAGER,
    "force": True,
    "_content_type": "application/apply-patch+yaml",
}


class ServingActuator:
    """Sync calls; the controller runs them in a thread. Refusals raise ApiRefused."""

    def __init__(self, api: ApiClient) -> None:
        self._apps = AppsV1Api(api)
        self._core = CoreV1Api(api)

    def apply(self, manifest: dict[str, Any]) -> None:
        """Apply a Deployment or a Service."""
        meta, kind = manifest["metadata"], manifest["kind"]
        body = cast(Any, manifest)
        try:
            if kind == "Deployment":
                self._apps.patch_namespaced_deployment(
                    meta["name"], meta["namespace"], body, **_APPLY
                )
            else:
                self._core.patch_namespaced_service(meta["name"], meta["namespace"], body, **_APPLY)
        except ApiException as exc:
            what = f"applying {kind.lower()} {meta['namespace']}/{meta['name']}"
            raise refused(what, exc) from exc

    def delete_deployment(self, namespace: str, name: str, uid: str) -> None:
        try:
            self._apps.delete_namespaced_deployment(
                name, namespace, body=cast(Any, {"preconditions": {"uid": uid}})
            )
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or another one has the name now
                raise refused(f"deleting deployment {namespace}/{name}", exc) from exc
