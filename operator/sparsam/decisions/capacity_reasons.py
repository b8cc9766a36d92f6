"""The sentences of a capacity plan: why a pool grows, why pods fit nowhere.

They go into a GPUNodePool's status `lastAction.reason`, its Events and the pending pods'
Events, so they are short, name the pool, the taint or the number that decided, and never
carry a stack trace.
"""

from __future__ import annotations

from sparsam.api.gpunodepool import Taint
from sparsam.decisions.cluster import Pool
from sparsam.decisions.packing import Room, Shape, fits, mismatch
from sparsam.decisions.rightsizing import Planner, clock
from sparsam.decisions.scheduling import describe_taint


def amount(dim: int, value: int) -> str:
    """`8 GPUs`, `1 GPU`, `48 CPUs`, `192Gi memory`: dimension `dim` of a Room."""
    if dim == 0:
        return f"{value} GPU" if value == 1 else f"{value} GPUs"
    if dim == 1:
        return f"{value / 1000:g} CPUs"
    return f"{value / 2**30:g}Gi memory"


def add_reason(planner: Planner, pool_name: str, count: int) -> str:
    """`add 2 nodes: 7 pending pods (14 GPUs) have no room on existing nodes; ...`."""
    slots = planner.ws.slots
    pods = [e.pod for s in slots if s.new and not s.removed and s.pool == pool_name for e in s.pods]
    parts = []
    if pods:
        gpus = amount(0, sum(pod.requests.gpus for pod in pods))
        if len(pods) == 1:
            parts.append(f"1 pending pod ({gpus}) has no room on existing nodes")
        else:
            parts.append(f"{len(pods)} pending pods ({gpus}) have no room on existing nodes")
    minimum = planner.added_for_min[pool_name]
    if minimum:
        parts.append(f"{minimum} to keep minNodes {planner.pools[pool_name].min_nodes}")
    parts.extend(sorted(planner.fallbacks[pool_name]))
    nodes = "1 node" if count == 1 else f"{count} nodes"
    return f"add {nodes}: " + "; ".join(parts)


def unschedulable_reason(planner: Planner, shape: Shape) -> str:
    """Why pods of `shape` got no capacity: one sentence, the decisive fact first. Pools that
    would take the pod but may not grow (maxNodes, InsufficientCapacity) come first, then a
    taint every pool has, a size no pool has, and else each pool's reason."""
    pools = list(planner.pools.values())
    if not pools:
        return "no node has room for it and there is no GPUNodePool"
    reasons = {pool.name: why_not(planner, shape, pool) for pool in pools}
    blocked = [f"pool {n} {text}" for n, text in reasons.items() if text.startswith(_BLOCKED)]
    if blocked:
        others = "" if len(blocked) == len(pools) else "; no other pool fits it"
        return "; ".join(blocked) + others
    for dim in range(3):
        largest = max(pool.node_resources.as_tuple()[dim] for pool in pools)
        if shape.req[dim] > largest:
            need, has = amount(dim, shape.req[dim]), amount(dim, largest)
            return f"needs {need}, the largest pool node has {has}"
    untolerated = [
        {t for t in planner.templates[p.name].taints if not _tolerated(shape, t)} for p in pools
    ]
    common = set.intersection(*untolerated)
    if common:
        taint = min(common, key=describe_taint)
        return f"every pool has taint {describe_taint(taint)}, which the pod does not tolerate"
    by_text: dict[str, list[str]] = {}
    for name, text in reasons.items():
        by_text.setdefault(text, []).append(name)
    return "no pool fits it: " + "; ".join(
        f"{', '.join(names)}: {text}" for text, names in by_text.items()
    )


def why_not(planner: Planner, shape: Shape, pool: Pool) -> str:
    """Why `pool` gets no new node for pods of `shape`, with the pool as the subject."""
    wrong = mismatch(shape, planner.templates[pool.name])
    if wrong is not None:
        return wrong
    room: Room = pool.node_resources.as_tuple()
    if not fits(shape.req, room):
        dim = next(d for d in range(3) if shape.req[d] > room[d])
        return f"has nodes with {amount(dim, room[dim])}, the pod needs {shape.req[dim]}"
    if pool.max_nodes <= 0:
        return "is disabled (maxNodes 0)"
    until = planner.offering(pool).unavailable_until
    if until is not None and planner.now < until:
        return f"has no capacity until {clock(until)} (InsufficientCapacity)"
    if planner.count[pool.name] >= pool.max_nodes:
        return f"is at maxNodes ({pool.max_nodes})"
    return "has room, yet the packing left the pod out"  # pragma: no cover - it would not


#: How `why_not` begins when the pool would take the pod but may not grow.
_BLOCKED = ("is disabled", "has no capacity until", "is at maxNodes")


def _tolerated(shape: Shape, taint: Taint) -> bool:
    return any(t.tolerates(taint) for t in shape.tolerations)
