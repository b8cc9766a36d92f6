"""Which of a pool's nodes a GPUNodePool pass drains, and which it uncordons.

    choice = choose_drains(nodes, plan)     # pure: no I/O, no clock

The capacity pass plans the whole cluster (`capacity.plan_capacity`), then acts on one pool:
this is that pool's part of the plan as the pass carries it out. A node with an interruption
notice is drained whatever the plan says (it goes anyway, and its pods should leave before
it does); a node the plan removes is drained to scale down. A node we cordoned for a drain
that neither reason holds any more (the new plan keeps it, or a crash left the cordon) is
uncordoned: each pass re-decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sparsam.decisions.capacity import Plan

#: Why a node is drained (the cordon's annotation, and the Cordoned Event).
REASON_INTERRUPTION: Final = "Interruption"
REASON_SCALE_DOWN: Final = "ScaleDown"
REASON_POOL_DELETED: Final = "PoolDeleted"


@dataclass(frozen=True, slots=True)
class PoolNode:
    """One of the pool's nodes as the drain choice sees it."""

    name: str
    #: The interruption signal on it, None when there is none.
    interruption: str | None = None
    #: We cordoned it for a drain (our annotation is on it).
    cordoned: bool = False


@dataclass(frozen=True, slots=True)
class Drain:
    node: str
    #: REASON_INTERRUPTION or REASON_SCALE_DOWN.
    why: str
    #: Why it goes, for the ScaleDown Event and lastAction once it is gone.
    because: str


@dataclass(frozen=True, slots=True)
class DrainChoice:
    #: The nodes to drain a step further, by name.
    drain: tuple[Drain, ...] = ()
    #: The nodes we cordoned that no longer drain.
    uncordon: tuple[str, ...] = ()


def choose_drains(nodes: Sequence[PoolNode], plan: Plan) -> DrainChoice:
    """The drains of one pool's `nodes` under the cluster's `plan`."""
    removed = set(plan.remove)
    drain: list[Drain] = []
    uncordon: list[str] = []
    for node in nodes:
        if node.interruption is not None:
            because = f"interrupted ({node.interruption})"
            drain.append(Drain(node.name, REASON_INTERRUPTION, because))
        elif node.name in removed:
            because = plan.remove_reasons.get(node.name, "not needed")
            drain.append(Drain(node.name, REASON_SCALE_DOWN, because))
        elif node.cordoned:
            uncordon.append(node.name)
    return DrainChoice(tuple(sorted(drain, key=lambda d: d.node)), tuple(uncordon))
