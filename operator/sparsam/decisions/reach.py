"""How many pods of one shape the cluster could ever hold, and why not more.

    reach = pod_reach(pod, pools, nodes, rules)       # pure: no I/O, no clock

A TrainingJob asks for `workers.max` workers, but only as many as some node could ever take
are worth creating: the rest would only wait, and a large `max` would make the operator
create, watch and remember thousands of pods no node will ever run. What could ever hold a
pod of the shape is, for each GPUNodePool the pod may run on (spot policy, allowedGPUTypes,
selectors, affinity, taints: `packing.mismatch`) and whose nodes are large enough, `maxNodes`
times the pods one of its nodes takes; plus, on the nodes of no pool (nodes sparsam does not
manage), as many as fit their allocatable room. A shape no pool and no node can hold is
unschedulable, and `Reach.why` says which pools were considered and why each cannot hold it,
as Karpenter's "incompatible with all node pools" does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sparsam.api import constants as c
from sparsam.decisions.capacity_reasons import amount
from sparsam.decisions.cluster import CapacityRules, Node, Pod, Pool
from sparsam.decisions.packing import NodeClass, Shape, fits, how_many, mismatch

#: A ceiling beyond any real cluster: a pod that requests nothing fits a node "without end".
#: The sum saturates here, so that the number stays small whatever the input.
LIMITLESS: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Reach:
    """`pods`: how many pods of the shape the cluster could ever hold (at most `LIMITLESS`).
    `refusals`: for each pool that cannot hold one, the pool's name and why."""

    pods: int
    refusals: tuple[tuple[str, str], ...] = ()
    #: For each pool that can hold some: its name and how many at most.
    holders: tuple[tuple[str, int], ...] = ()

    def why(self) -> str:
        """One sentence naming every pool considered: how many each can hold, or why it
        cannot hold the pod."""
        refused = "; ".join(f"pool {name} {text}" for name, text in self.refusals)
        if not self.holders:
            if not self.refusals:
                return "no GPUNodePool and no node can hold it"
            return f"incompatible with all node pools: {refused}"
        held = "; ".join(f"pool {name} holds at most {count}" for name, count in self.holders)
        return f"{held}; {refused}" if refused else held


def pod_reach(
    pod: Pod,
    pools: Iterable[Pool],
    nodes: Iterable[Node],
    rules: CapacityRules,
    limit: int = LIMITLESS,
) -> Reach:
    """How many pods like `pod` could ever run: on every pool that may grow for it, up to its
    maxNodes, and on the nodes of no pool in `pools`. Bounded by `limit`."""
    shape = Shape(0, pod, rules)
    total = 0
    refusals: list[tuple[str, str]] = []
    holders: list[tuple[str, int]] = []
    governed: set[str] = set()
    for pool in sorted(pools, key=lambda p: p.name):
        governed.add(pool.name)
        cls = NodeClass(
            0,
            pool.labels,
            pool.taints,
            pool.capacity_type,
            pool.gpu_type,
            pool.gpus_per_node > 0,
            "provisioning",
        )
        room = pool.node_resources.as_tuple()
        wrong = mismatch(shape, cls)
        if wrong is None and not fits(shape.req, room):
            dim = next(d for d in range(3) if shape.req[d] > room[d])
            need = amount(dim, shape.req[dim])
            wrong = f"has nodes with {amount(dim, room[dim])}, the pod needs {need}"
        if wrong is None and pool.max_nodes <= 0:
            wrong = "is disabled (maxNodes 0)"
        if wrong is not None:
            refusals.append((pool.name, wrong))
            continue
        count = min(limit, pool.max_nodes * min(limit, how_many(shape.req, room)))
        holders.append((pool.name, count))
        total = min(limit, total + count)
    for node in nodes:
        if total >= limit:
            break
        if node.pool is not None and node.pool in governed:
            continue  # counted by its pool's maxNodes
        gpu_type = node.labels.get(c.LABEL_GPU_PRODUCT, "")
        cls = NodeClass(
            0,
            node.labels,
            node.taints,
            node.capacity_type,
            gpu_type,
            node.allocatable.gpus > 0,
            "ready",
        )
        if mismatch(shape, cls) is None:
            total = min(limit, total + how_many(shape.req, node.allocatable.as_tuple()))
    return Reach(total, tuple(refusals), tuple(holders))
