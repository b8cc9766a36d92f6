"""`decisions.peering.may_act`: Kopf's peering rule, which the work queues' passes follow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sparsam.decisions.peering import may_act

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
