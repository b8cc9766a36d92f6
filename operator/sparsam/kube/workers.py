"""Creating and deleting what a TrainingJob runs as (manifests from `kube.trainingjob`).

The Service is server-side applied as field manager `sparsam` (forced: we own it). Pods are
created with a POST: a pod's spec is immutable, so an existing worker of the same name is
left alone (409), and the controller decides whether it must go. Deletes carry the pod's uid
as a precondition, so a newer pod that took the name is never deleted by mistake.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sparsam.api import constants as c
from sparsam.kube.errors import refused
from sparsam.kube.rest import APPLY_PATCH, Rest, path
from sparsam.kube.status import StatusWriter


def _core(namespace: str, plural: str, *rest: str) -> str:
    return path("api", "v1", "namespaces", namespace, plural, *rest)


def _ours(namespace: str, plural: str, *rest: str) -> str:
    return path("apis", c.GROUP, c.VERSION, "namespaces", namespace, plural, *rest)


_APPLY: dict[str, str] = {"fieldManager": c.FIELD_MANAGER, "force": "true"}
_MANAGER: dict[str, str] = {"fieldManager": c.FIELD_MANAGER}


class WorkerActuator:
    """Sync calls (`kube.rest`: a pass makes several per worker, so no typed models); the
    controller runs them in a thread. Refusals raise ApiRefused."""

    def __init__(self, api: ApiClient) -> None:
        self._rest = Rest(api)
        self._status = StatusWriter(api, c.TRAINING_JOB)

    def apply_service(self, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        try:
            self._rest.call(
                "PATCH",
                _core(meta["namespace"], "services", meta["name"]),
                manifest,
                query=_APPLY,
                content_type=APPLY_PATCH,
            )
        except ApiException as exc:
            raise refused(f"applying service {meta['namespace']}/{meta['name']}", exc) from exc

    def create_pod(self, manifest: dict[str, Any]) -> bool:
        """True when created, False when a pod of that name exists already."""
        meta = manifest["metadata"]
        try:
            self._rest.call("POST", _core(meta["namespace"], "pods"), manifest, query=_MANAGER)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise refused(f"creating pod {meta['namespace']}/{meta['name']}", exc) from exc
        return True

    def delete_pod(self, namespace: str, name: str, uid: str, force: bool = False) -> None:
        """Delete the pod; `force`: with no grace period, for a pod whose node is gone (no
        kubelet will ever confirm its end, so a graceful delete would leave it behind)."""
        body: dict[str, Any] = {"preconditions": {"uid": uid}}
        if force:
            body["gracePeriodSeconds"] = 0
        try:
            self._rest.call("DELETE", _core(namespace, "pods", name), body)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or another pod has the name now
                raise refused(f"deleting pod {namespace}/{name}", exc) from exc

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge `status` into the TrainingJob's status (the counts a pass must make durable
        before it acts on them)."""
        self._status(namespace, name, status)

    def apply_inference_service(self, manifest: dict[str, Any]) -> None:
        """Create or update the InferenceService a job deploys (server-side apply)."""
        meta = manifest["metadata"]
        try:
            self._rest.call(
                "PATCH",
                _ours(meta["namespace"], c.INFERENCE_SERVICE.plural, meta["name"]),
                manifest,
                query=_APPLY,
                content_type=APPLY_PATCH,
            )
        except ApiException as exc:
            what = f"applying inferenceservice {meta['namespace']}/{meta['name']}"
            raise refused(what, exc) from exc

    def annotate_job(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Merge `annotations` into the TrainingJob's metadata (what the operator observed of
        its end: on the object, not in status, which anyone granted the status subresource
        may rewrite)."""
        try:
            self._rest.call(
                "PATCH",
                _ours(namespace, c.TRAINING_JOB.plural, name),
                {"metadata": {"annotations": annotations}},
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            raise refused(f"annotating trainingjob {namespace}/{name}", exc) from exc

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        """Delete the TrainingJob itself (runPolicy.ttlSecondsAfterFinished)."""
        try:
            self._rest.call(
                "DELETE",
                _ours(namespace, c.TRAINING_JOB.plural, name),
                {"preconditions": {"uid": uid}},
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise refused(f"deleting trainingjob {namespace}/{name}", exc) from exc
