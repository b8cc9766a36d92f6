"""Reading the dev cluster's audit log (`DevCluster.audit_log`, policy `cluster.AUDIT_POLICY`):
which workload objects were created and deleted, and whose status was written, by whom, and
when.

The time is the apiserver's, to the microsecond, at the end of the request: for a create, when
the object was stored. A watch delivers it later, by how much depends on how far the
apiserver's watch fan-out is behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Write:
    verb: str  # create, delete, deletecollection, patch, update
    resource: str  # plural: pods, trainingjobs, ...
    subresource: str  # status, or "" for the object itself
    namespace: str
    name: str
    code: int  # the response's HTTP status
    user: str
    at: float  # seconds since the epoch, when the apiserver completed the response


def parse(line: str) -> Write | None:
    """A write of the log's line; None for a line that is not a completed request's event."""
    try:
        event = json.loads(line)
    except ValueError:
        return None  # a line cut short by a rotation or a write in progress
    if not isinstance(event, dict) or event.get("stage") != "ResponseComplete":
        return None
    ref = event.get("objectRef") or {}
    try:
        at = datetime.fromisoformat(event["stageTimestamp"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None
    return Write(
        verb=str(event.get("verb", "")),
        resource=str(ref.get("resource", "")),
        subresource=str(ref.get("subresource", "")),
        namespace=str(ref.get("namespace", "")),
        name=str(ref.get("name", "")),
        code=int((event.get("responseStatus") or {}).get("code", 0)),
        user=str((event.get("user") or {}).get("username", "")),
        at=at,
    )


def read(path: Path) -> Iterator[Write]:
    """The writes in the log at `path`, oldest first (none when there is no log)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if (write := parse(line)) is not None:
                    yield write
    except FileNotFoundError:
        return


def first(
    writes: Iterable[Write], verbs: Iterable[str], resource: str, subresource: str = ""
) -> dict[tuple[str, str], float]:
    """When each (namespace, name) of `resource` (its `subresource`) first had one of `verbs`
    succeed."""
    wanted = set(verbs)
    found: dict[tuple[str, str], float] = {}
    for write in writes:
        if (
            write.verb in wanted
            and (write.resource, write.subresource) == (resource, subresource)
            and 200 <= write.code < 300
        ):
            found.setdefault((write.namespace, write.name), write.at)
    return found


def created(writes: Iterable[Write], resource: str) -> dict[tuple[str, str], float]:
    """When each (namespace, name) of `resource` was first created."""
    return first(writes, ("create",), resource)


def first_status(writes: Iterable[Write], resource: str) -> dict[tuple[str, str], float]:
    """When the status of each (namespace, name) of `resource` was first written."""
    return first(writes, ("patch", "update"), resource, "status")
