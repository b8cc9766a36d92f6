"""The node pool port: how the GPUNodePool controller adds and removes a pool's nodes.

Small on purpose, like Karpenter's CloudProvider: the controller decides (decisions/), a provider
only acts. Every method takes the pool as the operator reads it (`sparsam.api.gpunodepool
.GPUNodePool`); what a node looks like comes from `sparsam.decisions.cluster.node_labels` and
`node_taints`, the same functions the planner uses, so a new node is what the plan assumed.

Errors are typed, and every provider raises only `ProviderError` and its subclasses:

- `InsufficientCapacity`: the offering cannot provide nodes now. Nothing was added. The caller
  marks the pool unavailable for a TTL (`decisions.cluster.Offering.unavailable_until`) and lets
  the planner fall back to another pool.
- `NotFound`: what the call names does not exist. `delete_node` RAISES it (providers never
  swallow it), and the caller treats it as success: the node is gone, which is what it wanted.
  Raising keeps the information ("already gone") for logs and status.
- `Transient`: the apiserver or cloud failed in a way that may pass (5xx, 429, conflicts,
  connection errors). Nothing is known to have changed; retry with backoff
  (`kopf.TemporaryError(delay=...)`).
- `MaxNodesExceeded`: `scale_up` would take the pool above `spec.maxNodes`. The planner never
  asks for that; providers refuse it anyway, as a guard, and change nothing.
- `NotSupported`: the pool names another provider, or asks for something this provider cannot do.
- `ProviderError` itself: anything else (403, an invalid object): not worth retrying.
"""

from __future__ import annotations

from typing import Protocol

from sparsam.api.gpunodepool import GPUNodePool


class ProviderError(RuntimeError):
    """Base of every error a node pool provider raises; the message is one sentence."""

    def __init__(self, pool: str, message: str) -> None:
        super().__init__(f"pool {pool}: {message}")
        self.pool = pool


class InsufficientCapacity(ProviderError):
    """The offering cannot provide nodes now: mark it unavailable for a TTL and fall back."""


class NotFound(ProviderError):
    """The node (or machine, or MachineDeployment) does not exist; success when deleting."""


class Transient(ProviderError):
    """May pass by itself: retry with backoff."""


class MaxNodesExceeded(ProviderError):
    """The request would take the pool above spec.maxNodes; nothing was changed."""


class NotSupported(ProviderError):
    """This provider cannot serve this pool or this request."""


class NodePoolProvider(Protocol):
    """Adds and removes the nodes of one kind of GPUNodePool. Synchronous: Kopf runs sync
    handlers in its thread pool."""

    def size(self, pool: GPUNodePool) -> int:
        """How many nodes the pool has asked for and not given back: for kwok, the Node objects
        labelled with the pool; for Cluster API, the MachineDeployment's spec.replicas (machines
        may still be on their way)."""
        ...

    def scale_up(self, pool: GPUNodePool, count: int) -> list[str]:
        """Add `count` nodes (count >= 1). Returns the names of the new nodes where the provider
        knows them at once (kwok), else an empty list (Cluster API: machines and their nodes are
        created later by Cluster API's controllers; watch Nodes for them). On an error, some
        of the nodes may have been added already (kwok adds them one by one): the caller counts
        again with `size` instead of assuming none was."""
        ...

    def delete_node(self, pool: GPUNodePool, node_name: str) -> None:
        """Remove this node from the pool for good (the pool shrinks by one). The caller drains
        it first. Raises NotFound when it is already gone, which the caller treats as success."""
        ...


def check_scale_up(pool: GPUNodePool, current: int, count: int) -> None:
    """The guard every provider runs before adding: count >= 1 and never above maxNodes."""
    name = pool.metadata.name
    if count < 1:
        raise ValueError(f"pool {name}: scale_up needs count >= 1, not {count}")
    if current + count > pool.spec.max_nodes:
        raise MaxNodesExceeded(
            name,
            f"adding {count} to {current} nodes exceeds maxNodes {pool.spec.max_nodes}",
        )
