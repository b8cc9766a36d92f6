"""What a pending pod waits for, read off the scheduler's verdict on it.

    waits_for_capacity(condition)      # pure: the pod's PodScheduled condition in
    missing_claims(condition)          # the PersistentVolumeClaims it names as missing

The capacity planner provisions for pods that wait for room: a node would let them run.
kube-scheduler says why a pod is not scheduled in its PodScheduled condition (status False,
reason Unschedulable), in one message:

    0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) had untolerated
    taint {gpu: true}. preemption: 0/3 nodes are available: ...

Each reason counted over nodes ("1 Insufficient nvidia.com/gpu", "2 node(s) didn't match
Pod's node affinity/selector") is a node's verdict: another node may fit. A reason without a
count is the pod's own (a PreFilter: `persistentvolumeclaim "data" not found`, `pod has unbound
immediate PersistentVolumeClaims`): no node, old or new, lets it run, so provisioning one only
leaves it empty. Nor do volume conflicts that every node shares, nor a pod held by scheduling
gates (reason SchedulingGated). A pod the scheduler has not judged yet (no condition) is taken
to wait for room, as before the scheduler saw it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

#: Node verdicts that say nothing of room: a new node would have the same volume trouble.
_VOLUME_VERDICTS: Final = (
    "volume node affinity conflict",
    "didn't find available persistent volumes",
    "unbound immediate persistentvolumeclaims",
    "exceed max volume count",
)
_COUNTED = re.compile(r"^\d+ ")
_CLAIM = re.compile(r'persistentvolumeclaim "([^"]+)" not found', re.IGNORECASE)
#: The scheduler's message has at most this much worth reading (it grows with the nodes).
_READ: Final = 4096


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A pod's PodScheduled condition, as far as the verdict goes."""

    status: str
    reason: str = ""
    message: str = ""


def verdicts(condition: Scheduled) -> tuple[str, ...]:
    """The reasons of the scheduler's message, before its preemption part."""
    message = condition.message[:_READ]
    _, _, listed = message.partition("nodes are available:")
    listed = listed.split(" preemption:", 1)[0].strip().rstrip(".")
    return tuple(part.strip() for part in listed.split(", ") if part.strip())


def waits_for_capacity(condition: Scheduled | None) -> bool:
    """Would a node with room let this pending pod run?"""
    if condition is None or condition.status != "False":
        return True
    if condition.reason != "Unschedulable":
        return False  # SchedulingGated, or a reason no node answers
    if "no nodes available to schedule pods" in condition.message[:_READ]:
        return True
    found = verdicts(condition)
    if not found:
        return True  # a message in a form not known: a node may still help
    if any(not _COUNTED.match(v) for v in found):
        return False  # the pod's own: a missing or unbound claim, ...
    return any(not any(s in v.lower() for s in _VOLUME_VERDICTS) for v in found)


def missing_claims(condition: Scheduled | None) -> tuple[str, ...]:
    """The PersistentVolumeClaims the scheduler says do not exist, in the order it names
    them."""
    if condition is None:
        return ()
    return tuple(dict.fromkeys(_CLAIM.findall(condition.message[:_READ])))
