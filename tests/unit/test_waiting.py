"""What a pending pod waits for, from kube-scheduler's own messages: room (the capacity
planner provisions for it) or something no node gives (it does not)."""

from __future__ import annotations

import pytest

from sparsam.decisions.waiting import Scheduled, missing_claims, waits_for_capacity

PREEMPTION = " preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."


def unschedulable(message: str) -> Scheduled:
    return Scheduled("False", "Unschedulable", message)


@pytest.mark.parametrize(
    "message",
    [
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu." + PREEMPTION,
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node "
        "affinity/selector." + PREEMPTION,
        "0/2 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: true}.",
        "0/1 nodes are available: 1 node(s) were unschedulable.",
        "no nodes available to schedule pods",
        "something this version of the scheduler says that is not known",
    ],
)
def test_pods_a_node_with_room_would_run_wait_for_capacity(message: str) -> None:
    assert waits_for_capacity(unschedulable(message))


@pytest.mark.parametrize(
    "message",
    [
        '0/3 nodes are available: persistentvolumeclaim "weights" not found.' + PREEMPTION,
        "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims." + PREEMPTION,
        "0/3 nodes are available: 3 node(s) had volume node affinity conflict." + PREEMPTION,
    ],
)
def test_pods_held_back_by_their_own_volumes_do_not(message: str) -> None:
    assert not waits_for_capacity(unschedulable(message))


def test_a_pod_not_judged_yet_waits_a_gated_one_does_not() -> None:
    assert waits_for_capacity(None)
    assert waits_for_capacity(Scheduled("True"))
    assert not waits_for_capacity(Scheduled("False", "SchedulingGated", "gated"))


def test_the_missing_claims_are_named() -> None:
    message = '0/1 nodes are available: persistentvolumeclaim "weights" not found.'
    assert missing_claims(unschedulable(message)) == ("weights",)
    assert missing_claims(unschedulable("0/1 nodes are available: 1 Insufficient cpu.")) == ()
    assert missing_claims(None) == ()
