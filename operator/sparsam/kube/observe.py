"""Pods and Nodes, as the apiserver sends them, read into the capacity planner's inputs.

Pure: raw bodies (the dicts Kopf hands to handlers and indexes) in, frozen dataclasses out, so
the tests feed it literal manifests. Only what the planner decides by is read; anything that
does not parse (a quantity nobody could schedule by) is read as zero rather than failing the
whole loop on one odd pod.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from sparsam.api import constants as c
from sparsam.api.common import SpotPolicy
from sparsam.api.conditions import parse_rfc3339
from sparsam.api.gpunodepool import Taint, TaintEffect
from sparsam.api.parse import Quantity
from sparsam.decisions.cluster import Node, Pod, Resources
from sparsam.decisions.delivery import CompressPod
from sparsam.decisions.interruption import InterruptionSignals
from sparsam.decisions.scheduling import (
    NodeSelectorRequirement,
    NodeSelectorTerm,
    SelectorOperator,
    Toleration,
    TolerationOperator,
)
from sparsam.decisions.training import PodPhase, Worker
from sparsam.decisions.waiting import Scheduled

Body = Mapping[str, Any]
LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)
_EFFECTS: frozenset[str] = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})
_SPOT_POLICIES: frozenset[str] = frozenset({"Prefer", "Require", "Never"})
_SELECTOR_OPERATORS: frozenset[str] = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})
_POD_PHASES: frozenset[str] = frozenset({"Pending", "Running", "Succeeded", "Failed", "Unknown"})


def _quantity(value: Any) -> Decimal:
    try:
        return Quantity.parse(value)
    except (ValueError, InvalidOperation, TypeError):
        return Decimal(0)


def _resources(requests: Mapping[str, Any]) -> Resources:
    return Resources.of(
        gpus=int(_quantity(requests.get(c.GPU_RESOURCE, 0))),
        cpu=_quantity(requests.get("cpu", 0)),
        memory=_quantity(requests.get("memory", 0)),
    )


def pod_requests(spec: Body) -> Resources:
    """What the scheduler reserves for a pod: the sum over its containers, or the largest init
    container where that is more (per resource), plus the pod overhead."""
    total = [0, 0, 0]
    for container in spec.get("containers") or ():
        req = _resources((container.get("resources") or {}).get("requests") or {}).as_tuple()
        total = [a + b for a, b in zip(total, req, strict=True)]
    for container in spec.get("initContainers") or ():
        req = _resources((container.get("resources") or {}).get("requests") or {}).as_tuple()
        total = [max(a, b) for a, b in zip(total, req, strict=True)]
    overhead = _resources(spec.get("overhead") or {}).as_tuple()
    gpus, cpu, memory = (a + b for a, b in zip(total, overhead, strict=True))
    return Resources(gpus, cpu, memory)


def _tolerations(spec: Body) -> tuple[Toleration, ...]:
    found: list[Toleration] = []
    for raw in spec.get("tolerations") or ():
        operator = raw.get("operator") or "Equal"
        effect = raw.get("effect") or None
        if operator not in ("Equal", "Exists") or (effect is not None and effect not in _EFFECTS):
            continue
        found.append(
            Toleration(
                key=raw.get("key") or "",
                operator=cast(TolerationOperator, operator),
                value=raw.get("value") or "",
                effect=cast(TaintEffect | None, effect),
            )
        )
    return tuple(found)


def _affinity(spec: Body) -> tuple[NodeSelectorTerm, ...]:
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms: list[NodeSelectorTerm] = []
    for term in required.get("nodeSelectorTerms") or ():
        requirements = tuple(
            NodeSelectorRequirement(
                key=str(expr.get("key", "")),
                operator=cast(SelectorOperator, expr.get("operator")),
                values=tuple(str(v) for v in expr.get("values") or ()),
            )
            for expr in term.get("matchExpressions") or ()
            # Gt and Lt are not modelled; dropping them makes the term looser, never stricter.
            if expr.get("operator") in _SELECTOR_OPERATORS
        )
        terms.append(NodeSelectorTerm(requirements))
    return tuple(terms)


def pod_from_body(body: Body, nominated_node: str | None = None) -> Pod:
    """A Pod as the planner sees it. `nominated_node` is the controller's own nomination from
    an earlier plan; the scheduler's status.nominatedNodeName is used when there is none."""
    metadata: Body = body.get("metadata") or {}
    spec: Body = body.get("spec") or {}
    labels: Mapping[str, str] = metadata.get("labels") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    spot = labels.get(c.LABEL_SPOT_POLICY, "Prefer")
    owners = metadata.get("ownerReferences") or ()
    return Pod(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        requests=pod_requests(spec),
        node_selector=dict(spec.get("nodeSelector") or {}),
        tolerations=_tolerations(spec),
        affinity=_affinity(spec),
        spot=cast(SpotPolicy, spot if spot in _SPOT_POLICIES else "Prefer"),
        priority=int(spec.get("priority") or 0),
        training_worker=labels.get(c.LABEL_ROLE) == c.ROLE_WORKER,
        fresh_checkpoint=annotations.get(c.ANNOTATION_CHECKPOINT_FRESH) == "true",
        do_not_disrupt=annotations.get(c.ANNOTATION_DO_NOT_DISRUPT) == "true",
        daemon=any(owner.get("kind") == "DaemonSet" for owner in owners),
        nominated_node=nominated_node
        or (body.get("status") or {}).get("nominatedNodeName")
        or None,
    )


def is_pending(body: Body) -> bool:
    """Waiting for a node: not bound, not finished, not on its way out."""
    metadata: Body = body.get("metadata") or {}
    phase = (body.get("status") or {}).get("phase") or "Pending"
    return (
        not (body.get("spec") or {}).get("nodeName")
        and phase == "Pending"
        and not metadata.get("deletionTimestamp")
    )


def scheduled(body: Body) -> Scheduled | None:
    """The pod's PodScheduled condition (the scheduler's verdict), or None before it has one."""
    for cond in (body.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "PodScheduled":
            return Scheduled(
                str(cond.get("status", "")),
                str(cond.get("reason") or ""),
                str(cond.get("message") or ""),
            )
    return None


def holds_room(body: Body) -> bool:
    """Does a bound pod still take room on its node? Finished pods do not."""
    return (body.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the controller reads off one Node besides the planner's view of it."""

    node: Node
    #: The reason we cordoned it (ANNOTATION_DRAINING), None when we did not.
    draining: str | None
    #: The interruption signal on it, None when there is none.
    interruption: str | None


def node_from_body(
    body: Body,
    pods: Iterable[Pod],
    signals: InterruptionSignals,
    empty_since: datetime | None = None,
) -> NodeFacts:
    """A Node as the planner sees it, with the pods bound to it.

    A cordon we set ourselves to drain the node does not count as cordoned: the planner
    decides afresh whether the node should go, and the controller lifts the cordon when it no
    longer should (which is what cleans up after a crash mid-drain)."""
    metadata: Body = body.get("metadata") or {}
    spec: Body = body.get("spec") or {}
    status: Body = body.get("status") or {}
    labels: dict[str, str] = dict(metadata.get("labels") or {})
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    taints = tuple(
        Taint(key=str(t["key"]), effect=t["effect"], value=t.get("value"))
        for t in spec.get("taints") or ()
        if t.get("key") and t.get("effect") in _EFFECTS
    )
    true_conditions = [
        str(cond.get("type"))
        for cond in status.get("conditions") or ()
        if cond.get("status") == "True"
    ]
    draining = annotations.get(c.ANNOTATION_DRAINING) or None
    capacity_type = labels.get(c.LABEL_CAPACITY_TYPE)
    node = Node(
        name=str(metadata.get("name", "")),
        pool=labels.get(c.LABEL_POOL),
        allocatable=_resources(status.get("allocatable") or {}),
        # Every node the apiserver sends has one; without it, the node counts as old.
        created=parse_rfc3339(metadata.get("creationTimestamp")) or LONG_AGO,
        labels=labels,
        taints=taints,
        capacity_type="spot" if capacity_type == c.CAPACITY_SPOT else "on-demand",
        ready="Ready" in true_conditions,
        cordoned=bool(spec.get("unschedulable")) and draining is None,
        empty_since=empty_since,
        pods=tuple(pods),
    )
    return NodeFacts(node, draining, signals.notice((t.key for t in taints), true_conditions))


def worker_from_body(
    body: Body, node: NodeFacts | None, *, gone_node: bool, deleting: bool = False
) -> Worker:
    """A TrainingJob worker pod, with why its node is lost if it is: `node` is the facts of
    the node it is bound to (None when unbound or when that node is not in the cache), and
    `gone_node` says the pod is bound to a node that no longer exists."""
    metadata: Body = body.get("metadata") or {}
    status: Body = body.get("status") or {}
    labels: Mapping[str, str] = metadata.get("labels") or {}
    terminated: Body = {}
    running: Body = {}
    for container in status.get("containerStatuses") or ():
        state: Body = container.get("state") or {}
        terminated = state.get("terminated") or terminated
        running = state.get("running") or running
    lost: str | None = None
    if gone_node:
        lost = f"node {(body.get('spec') or {}).get('nodeName')} is gone"
    elif node is not None and node.interruption is not None:
        lost = f"node {node.node.name} is being interrupted ({node.interruption})"
    elif node is not None and not node.node.ready:
        lost = f"node {node.node.name} is NotReady"
    phase = status.get("phase") or "Pending"
    exit_code = terminated.get("exitCode")
    return Worker(
        index=int(labels.get(c.LABEL_WORKER_INDEX, "-1")),
        name=str(metadata.get("name", "")),
        phase=cast(PodPhase, phase if phase in _POD_PHASES else "Unknown"),
        exit_code=int(exit_code) if exit_code is not None else None,
        reason=terminated.get("reason") or status.get("reason"),
        node_lost=lost,
        deleting=deleting or bool(metadata.get("deletionTimestamp")),
        message=terminated.get("message"),
        created=parse_rfc3339(metadata.get("creationTimestamp")),
        started=parse_rfc3339((terminated or running).get("startedAt")),
    )


def compress_from_body(pod: Body) -> CompressPod:
    """The compress pod as `decide_delivery` sees it: phase, and once ended, the container's
    exit code and termination message."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    exit_code: int | None = None
    message: str | None = None
    for container in status.get("containerStatuses") or ():
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            exit_code = terminated.get("exitCode")
            message = terminated.get("message")
    known: dict[str, PodPhase] = {
        "Pending": "Pending",
        "Running": "Running",
        "Succeeded": "Succeeded",
        "Failed": "Failed",
    }
    return CompressPod(known.get(phase, "Unknown"), exit_code, message)
