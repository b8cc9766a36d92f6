"""Whether this replica may act, from its ClusterKopfPeering's status: Kopf's own rule, and
the hold of a replica that joins (`announced`).

Kopf pauses its watches and timers while another live peer has a priority at least ours
(equal priorities all pause), and resumes when none has. The passes of TrainingJobs,
InferenceServices and CostPolicies run outside Kopf's handlers (`handlers.passes`), so they
follow the same rule, read from the same object. A peer is live until `lastseen + lifetime`,
as Kopf counts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sparsam.api.conditions import parse_rfc3339


def may_act(peers: Mapping[str, Any], identity: str, priority: int, now: datetime) -> bool:
    """False while a live peer other than `identity` has a priority >= `priority`."""
    for peer, info in peers.items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        seen = parse_rfc3339(info.get("lastseen"))
        lifetime = timedelta(seconds=int(info.get("lifetime") or 60))
        if seen is not None and seen + lifetime <= now:
            continue  # dead: Kopf cleans it up
        if int(info.get("priority") or 0) >= priority:
            return False
    return True


def announced(listed: datetime | None, now: datetime, hold: timedelta) -> bool:
    """This replica's own entry has been in the peering object (since `listed`; None: not
    there) for `hold`: long enough for the other replicas, which read it as often as this one,
    to have seen it and stopped, and to have finished the pass they were in. Without it, a
    replica joining above an active one would act while the other still does."""
    return listed is not None and now - listed >= hold
