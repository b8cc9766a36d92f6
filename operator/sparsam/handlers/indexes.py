"""The operator's watch caches, as Kopf indexes, and typed reads of them.

Kopf starts no other handler until every index has listed its objects, which is what makes
"decide only after the caches have synced" hold for every controller. Each index keeps only
what the controllers read (a Node's view, a CostPolicy parsed), not whole objects. Pods are
not here: they change too often for Kopf's per-event cost (`kube.podcache`), and the operator
starts Kopf only once their list is in.

The index functions are `async` though they await nothing: Kopf runs a sync handler in its
thread pool, a hop (a thread handoff, a copied context, a shielded future) that cost more than
the function itself, once per index on every node event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from sparsam.api import constants as c
from sparsam.api.costpolicy import CostPolicy
from sparsam.api.parse import InvalidSpec
from sparsam.decisions.policy import effective_policy


def _node_view(body: kopf.Body) -> dict[str, Any]:
    metadata = body.get("metadata") or {}
    return {
        "metadata": {
            key: metadata.get(key)
            for key in ("name", "uid", "labels", "annotations", "creationTimestamp")
        },
        "spec": {key: body.get("spec", {}).get(key) for key in ("taints", "unschedulable")},
        "status": {
            "allocatable": body.get("status", {}).get("allocatable"),
            "conditions": body.get("status", {}).get("conditions"),
        },
    }


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.index("", "v1", "nodes", id="node_index", registry=registry)
    async def node_index(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
        return {name: _node_view(body)}

    @kopf.index(
        "apps",
        "v1",
        "deployments",
        labels={c.LABEL_INFERENCE_SERVICE: kopf.PRESENT},
        id="deployment_index",
        registry=registry,
    )
    async def deployment_index(
        namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], dict[str, Any]]:
        meta = body.get("metadata") or {}
        view = {
            "metadata": {k: meta.get(k) for k in ("name", "uid", "annotations")},
            "spec": {"replicas": (body.get("spec") or {}).get("replicas")},
            "status": {"readyReplicas": (body.get("status") or {}).get("readyReplicas")},
        }
        return {(namespace or "", labels[c.LABEL_INFERENCE_SERVICE]): view}

    @kopf.index(c.GROUP, c.VERSION, c.GPU_NODE_POOL.plural, id="pool_index", registry=registry)
    async def pool_index(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
        return {name: dict(body)}

    @kopf.index(c.GROUP, c.VERSION, c.COST_POLICY.plural, id="policy_index", registry=registry)
    async def policy_index(body: kopf.Body, **_: Any) -> dict[str, CostPolicy] | None:
        try:
            policy = CostPolicy.from_body(body)
        except InvalidSpec:
            return None  # the CostPolicy controller reports it; it governs nothing meanwhile
        return {policy.metadata.name: policy}

    @kopf.index("", "v1", "namespaces", id="namespace_index", registry=registry)
    async def namespace_index(
        name: str, labels: kopf.Labels, **_: Any
    ) -> dict[str, dict[str, str]]:
        return {name: dict(labels)}


# Typed reads. Kopf passes each index to every handler as a keyword named by its id.


def live(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The indexes among a handler's keywords. Kopf updates them in place, so they serve a
    pass run outside any handler (`handlers.workqueue`) as they serve the handler itself."""
    return {key: value for key, value in kwargs.items() if isinstance(value, kopf.Index)}


def _one(kwargs: Mapping[str, Any], index: str) -> dict[Any, Any]:
    return {key: next(iter(store)) for key, store in kwargs[index].items()}


def nodes(kwargs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return _one(kwargs, "node_index")


def nodes_of(kwargs: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The nodes `pods` are bound to (a node that is gone is absent): all a pass for one
    object reads, without copying every node of the cluster each time."""
    index: kopf.Index[str, dict[str, Any]] = kwargs["node_index"]
    names = {(pod.get("spec") or {}).get("nodeName") for pod in pods}
    return {name: next(iter(index[name])) for name in names if name and name in index}


def deployments(kwargs: Mapping[str, Any], namespace: str, service: str) -> list[dict[str, Any]]:
    """The Deployments of an InferenceService: name, uid, annotations, replicas, ready."""
    index: kopf.Index[tuple[str, str], dict[str, Any]] = kwargs["deployment_index"]
    return list(index.get((namespace, service), ()))


def pools(kwargs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return _one(kwargs, "pool_index")


def policies(kwargs: Mapping[str, Any]) -> tuple[CostPolicy, ...]:
    index: kopf.Index[str, CostPolicy] = kwargs["policy_index"]
    return tuple(p for store in index.values() for p in store)


def namespaces(kwargs: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    return _one(kwargs, "namespace_index")


def policy_of(kwargs: Mapping[str, Any], namespace: str) -> CostPolicy | None:
    """The CostPolicy that governs `namespace` (`decisions.policy.effective_policy`)."""
    return effective_policy(policies(kwargs), namespaces(kwargs).get(namespace, {}))
