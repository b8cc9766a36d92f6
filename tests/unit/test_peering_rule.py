"""`decisions.peering.may_act`, Kopf's peering rule, which the work queues' passes follow;
and `PeeringGate`'s hold on a replica that joins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client import ApiClient

from sparsam.decisions.peering import may_act
from sparsam.kube.peering import PeeringGate

NOW = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float = 1.0, lifetime: int = 60) -> dict[str, Any]:
    seen = NOW - timedelta(seconds=seen_ago)
    return {"priority": priority, "lastseen": seen.isoformat(), "lifetime": lifetime}


@pytest.mark.parametrize(
    ("peers", "expected"),
    [
        ({}, True),  # nobody else
        ({"me": peer(5)}, True),  # only ourselves
        ({"me": peer(5), "other": peer(1)}, True),  # a lower peer pauses, not us
        ({"me": peer(5), "other": peer(9)}, False),  # a higher one is active
        ({"me": peer(5), "other": peer(5)}, False),  # equal priorities all pause (Kopf's rule)
        ({"me": peer(5), "other": peer(9, seen_ago=61)}, True),  # a dead peer counts for nothing
        ({"me": peer(5), "other": peer(9, seen_ago=61, lifetime=120)}, False),  # still live
        ({"other": {"lastseen": None}}, False),  # no priority is 0, and never seen is live
        ({"other": "garbage"}, True),
    ],
)
def test_a_replica_acts_only_while_no_live_peer_has_a_priority_at_least_its_own(
    peers: dict[str, Any], expected: bool
) -> None:
    priority = 5 if "me" in peers else 0
    assert may_act(peers, "me", priority, NOW) is expected


def test_a_joining_replica_acts_only_once_the_others_have_had_time_to_see_it() -> None:
    gate = PeeringGate(ApiClient(), "sparsam", identity="me", priority=5, hold=4.0)
    lower = {"other": peer(1)}
    gate.update(lower, NOW)
    assert not gate()  # Kopf has not listed this replica yet: nobody else can know of it
    gate.update({**lower, "me": peer(5)}, NOW + timedelta(seconds=1))
    assert not gate()  # listed, but the lower replica may not have read it yet
    gate.update({**lower, "me": peer(5)}, NOW + timedelta(seconds=5))
    assert gate()
    gate.update({**lower, "me": peer(5), "above": peer(9)}, NOW + timedelta(seconds=6))
    assert not gate()  # the rule still rules
    gate.update(lower, NOW + timedelta(seconds=7))
    gate.update({**lower, "me": peer(5)}, NOW + timedelta(seconds=8))
    assert not gate()  # listed again: the hold starts over
