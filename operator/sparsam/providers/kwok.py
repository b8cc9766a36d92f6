"""The kwok node pool provider: a pool's nodes are Node objects that KWOK keeps Ready.

Used by `sparsam demo`, the tests and what-if runs. A node is created from the pool's template
(`node_manifest`, pure): the labels and taints of `decisions.cluster.node_labels/node_taints`
(exactly what the planner assumed), the kubelet's well-known labels, and `nvidia.com/gpu`, CPU,
memory and pods in `status.capacity` and `status.allocatable`. The apiserver keeps a Node's
status on create (not on update), so one create is enough; KWOK keeps what it finds there.

Nodes are created with a POST (field manager `sparsam`), not server-side apply: the name is
`<pool>-<5 random characters>`, and an apply onto a name that happens to exist would silently
adopt that node, where a POST fails with 409 and we draw another name.

Simulating a full offering: a pool labelled `kwok.sparsam.dev/insufficient-capacity: "true"`
raises InsufficientCapacity on scale_up, as a spot pool without capacity would; the demo and the
controller's tests use it to exercise the on-demand fallback.
"""

from __future__ import annotations

import random
from typing import Any, Final, cast

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException

from sparsam.api import constants as c
from sparsam.api.gpunodepool import GPUNodePool
from sparsam.decisions.cluster import Resources, node_labels, node_taints
from sparsam.providers._kube import api_errors, call
from sparsam.providers.nodepool import (
    InsufficientCapacity,
    NodePoolProvider,
    NotSupported,
    Transient,
    check_scale_up,
)

#: KWOK manages only nodes with this annotation (the dev cluster's kwok runs with
#: `--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake`).
KWOK_ANNOTATION: Final = ("kwok.x-k8s.io/node", "fake")
#: A pool with this label set to "true" has no capacity: scale_up raises InsufficientCapacity.
LABEL_INSUFFICIENT_CAPACITY: Final = "kwok.sparsam.dev/insufficient-capacity"
MAX_PODS: Final = "110"
#: Like the apiserver's generateName suffix: no vowels, no look-alikes.
_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
_SUFFIX: Final = 5
_NAME_MAX: Final = 253


def node_name(pool_name: str, rng: random.Random) -> str:
    """`<pool>-<5 random characters>`, within a Node name's 253 characters."""
    suffix = "".join(rng.choice(_ALPHABET) for _ in range(_SUFFIX))
    return f"{pool_name[: _NAME_MAX - _SUFFIX - 1]}-{suffix}"


def cpu_quantity(millis: int) -> str:
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(size: int) -> str:
    for suffix, unit in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def node_resources(resources: Resources) -> dict[str, str]:
    """A node's capacity (and allocatable: fake nodes reserve nothing) as quantities."""
    return {
        "cpu": cpu_quantity(resources.cpu_millis),
        "memory": memory_quantity(resources.memory_bytes),
        "pods": MAX_PODS,
        c.GPU_RESOURCE: str(resources.gpus),
    }


def node_manifest(pool: GPUNodePool, name: str) -> dict[str, Any]:
    """The Node a kwok pool's new node is: pure, so the tests read it field by field."""
    spec = pool.spec
    resources = Resources.of(
        spec.node_template.gpus_per_node, spec.node_template.cpu, spec.node_template.memory
    )
    labels = {
        # What a kubelet sets on every node; selectors on them must work here too.
        "kubernetes.io/hostname": name,
        "type": "kwok",
        c.LABEL_MANAGED_BY: c.FIELD_MANAGER,
        # The pool's own last, so they win.
        **node_labels(pool.metadata.name, spec),
    }
    taints = [
        {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value is not None else {})}
        for t in node_taints(spec)
    ]
    capacity = node_resources(resources)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1]},
        },
        "spec": {"taints": taints},
        "status": {"capacity": dict(capacity), "allocatable": dict(capacity)},
    }


def pool_selector(pool_name: str) -> str:
    return f"{c.LABEL_POOL}={pool_name}"


class KwokNodePoolProvider:
    """NodePoolProvider for `spec.provider.kwok`. `rng` makes names reproducible in tests."""

    def __init__(self, api: ApiClient, rng: random.Random | None = None) -> None:
        self._core = CoreV1Api(api)
        self._rng = rng or random.SystemRandom()

    def _check(self, pool: GPUNodePool) -> None:
        if pool.spec.provider.kwok is None:
            raise NotSupported(pool.metadata.name, "its provider is not kwok")

    def nodes(self, pool: GPUNodePool) -> list[str]:
        """Names of the pool's Node objects (by the sparsam.dev/pool label), sorted."""
        self._check(pool)
        name = pool.metadata.name
        found = call(
            name,
            "listing nodes",
            lambda: self._core.list_node(label_selector=pool_selector(name)),
        )
        return sorted(str(node.metadata.name) for node in found.items if node.metadata)

    def size(self, pool: GPUNodePool) -> int:
        return len(self.nodes(pool))

    def scale_up(self, pool: GPUNodePool, count: int) -> list[str]:
        self._check(pool)
        name = pool.metadata.name
        check_scale_up(pool, self.size(pool), count)
        if pool.metadata.labels.get(LABEL_INSUFFICIENT_CAPACITY) == "true":
            raise InsufficientCapacity(name, f"{LABEL_INSUFFICIENT_CAPACITY} is set")
        created: list[str] = []
        for _ in range(count):
            created.append(self._create(pool))
        return created

    def _create(self, pool: GPUNodePool, attempts: int = 5) -> str:
        for _ in range(attempts):
            candidate = node_name(pool.metadata.name, self._rng)
            try:
                with api_errors(pool.metadata.name, f"creating node {candidate}"):
                    self._core.create_node(
                        cast(Any, node_manifest(pool, candidate)), field_manager=c.FIELD_MANAGER
                    )
            except Transient as exc:
                if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 409:
                    continue  # the name is taken: draw another
                raise
            return candidate
        raise Transient(pool.metadata.name, f"{attempts} node names in a row were taken")

    def delete_node(self, pool: GPUNodePool, node_name: str) -> None:
        """Delete the Node. NotFound when it is gone already; NotSupported when it belongs to
        another pool (we never delete a node this pool does not own)."""
        self._check(pool)
        name = pool.metadata.name
        node = call(name, f"reading node {node_name}", lambda: self._core.read_node(node_name))
        metadata = node.metadata
        labels = (metadata.labels if metadata else None) or {}
        if labels.get(c.LABEL_POOL) != name:
            raise NotSupported(name, f"node {node_name} does not belong to this pool")
        uid = metadata.uid if metadata else None
        call(
            name,
            f"deleting node {node_name}",
            # The uid precondition: never delete a newer node that took the same name.
            lambda: self._core.delete_node(
                node_name, body=cast(Any, {"preconditions": {"uid": uid}})
            ),
        )


def _conforms(provider: KwokNodePoolProvider) -> NodePoolProvider:
    return provider  # mypy checks that KwokNodePoolProvider implements the Protocol
