"""Draining a node the way `kubectl drain` does: cordon, then evict through the Eviction API.

Evictions honour PodDisruptionBudgets: the apiserver answers 429 while a budget forbids one, and
the caller tries again on its next pass instead of deleting the pod. Our cordon carries the
`sparsam.dev/draining` annotation, so a cordon we set is told apart from an administrator's
(which we never lift). Sync calls; the controller runs them in a thread.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException

from sparsam.api import constants as c
from sparsam.decisions.cluster import Pod
from sparsam.kube.errors import refused
from sparsam.kube.observe import holds_room, pod_from_body

EvictionResult = Literal["evicted", "gone", "blocked"]


class NodeDrainer:
    """Cordon, uncordon and evict, as the field manager `sparsam`."""

    def __init__(self, api: ApiClient) -> None:
        self._core = CoreV1Api(api)

    def cordon(self, node: str, reason: str) -> None:
        """Mark the node unschedulable, and say why in our annotation."""
        self._patch(node, True, reason)

    def uncordon(self, node: str) -> None:
        """Lift our cordon (only ever called on a node that carries our annotation)."""
        self._patch(node, False, None)

    def _patch(self, node: str, unschedulable: bool, reason: str | None) -> None:
        body = {
            "metadata": {"annotations": {c.ANNOTATION_DRAINING: reason}},
            "spec": {"unschedulable": unschedulable or None},
        }
        try:
            self._core.patch_node(node, cast(Any, body))
        except ApiException as exc:
            if exc.status != 404:  # a node that is gone needs no cordon
                raise refused(f"patching node {node}", exc) from exc

    def evict(self, namespace: str, name: str) -> EvictionResult:
        """Ask the Eviction API to evict one pod: `blocked` while a PodDisruptionBudget
        forbids it (429), `gone` when the pod no longer exists."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        try:
            self._core.create_namespaced_pod_eviction(name, namespace, cast(Any, body))
        except ApiException as exc:
            # 403 while its namespace is terminating: the pod goes with the namespace.
            if exc.status == 404 or (exc.status == 403 and "terminat" in str(exc.body)):
                return "gone"
            if exc.status == 429:
                return "blocked"
            raise refused(f"evicting pod {namespace}/{name}", exc) from exc
        return "evicted"

    def pods_on_node(self, node: str) -> list[Pod]:
        """The pods bound to `node` that take room, read from the apiserver (not a cache)."""
        try:
            found = self._core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
        except ApiException as exc:
            raise refused(f"listing the pods of node {node}", exc) from exc
        bodies = [self._core.api_client.sanitize_for_serialization(p) for p in found.items]
        return [pod_from_body(b) for b in bodies if holds_room(b)]
