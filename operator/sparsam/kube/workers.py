"""Creating and deleting what a TrainingJob runs as (manifests from `kube.trainingjob`).

The Service is server-side applied as field manager `sparsam` (forced: we own it). Pods are
created with a POST: a pod's spec is immutable, so an existing worker of the same name is
left alone (409), and the controller decides whether it must go. Deletes carry the pod's uid
as a precondition, so a newer pod that took the name is never deleted by mistake.
"""

from __future__ import annotations

from typing import Any, cast

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from sparsam.api import constants as c
from sparsam.kube.errors import refused


class WorkerActuator:
    """Sync calls; the controller runs them in a thread. Refusals raise ApiRefused."""

    def __init__(self, api: ApiClient) -> None:
        self._core = CoreV1Api(api)
        self._custom = CustomObjectsApi(api)

    def apply_service(self, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        try:
            self._core.patch_namespaced_service(
                meta["name"],
                meta["namespace"],
                cast(Any, manifest),
                field_manager=c.FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
            )
        except ApiException as exc:
            raise refused(f"applying service {meta['namespace']}/{meta['name']}", exc) from exc

    def create_pod(self, manifest: dict[str, Any]) -> bool:
        """True when created, False when a pod of that name exists already."""
        try:
            self._core.create_namespaced_pod(
                manifest["metadata"]["namespace"],
                cast(Any, manifest),
                field_manager=c.FIELD_MANAGER,
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            meta = manifest["metadata"]
            raise refused(f"creating pod {meta['namespace']}/{meta['name']}", exc) from exc
        return True

    def delete_pod(self, namespace: str, name: str, uid: str, force: bool = False) -> None:
        """Delete the pod; `force`: with no grace period, for a pod whose node is gone (no
        kubelet will ever confirm its end, so a graceful delete would leave it behind)."""
        body: dict[str, Any] = {"preconditions": {"uid": uid}}
        if force:
            body["gracePeriodSeconds"] = 0
        try:
            self._core.delete_namespaced_pod(name, namespace, body=cast(Any, body))
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or another pod has the name now
                raise refused(f"deleting pod {namespace}/{name}", exc) from exc

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge `status` into the TrainingJob's status (the counts a pass must make durable
        before it acts on them)."""
        try:
            self._custom.patch_namespaced_custom_object_status(
                c.GROUP,
                c.VERSION,
                namespace,
                c.TRAINING_JOB.plural,
                name,
                cast(Any, {"status": status}),
                field_manager=c.FIELD_MANAGER,
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            raise refused(f"writing the status of trainingjob {namespace}/{name}", exc) from exc

    def apply_inference_service(self, manifest: dict[str, Any]) -> None:
        """Create or update the InferenceService a job deploys (server-side apply)."""
        meta = manifest["metadata"]
        try:
            self._custom.patch_namespaced_custom_object(
                c.GROUP,
                c.VERSION,
                meta["namespace"],
                c.INFERENCE_SERVICE.plural,
                meta["name"],
                cast(Any, manifest),
                field_manager=c.FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
            )
        except ApiException as exc:
            what = f"applying inferenceservice {meta['namespace']}/{meta['name']}"
            raise refused(what, exc) from exc

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        """Delete the TrainingJob itself (runPolicy.ttlSecondsAfterFinished)."""
        try:
            self._custom.delete_namespaced_custom_object(
                c.GROUP,
                c.VERSION,
                namespace,
                c.TRAINING_JOB.plural,
                name,
                body=cast(Any, {"preconditions": {"uid": uid}}),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise refused(f"deleting trainingjob {namespace}/{name}", exc) from exc
