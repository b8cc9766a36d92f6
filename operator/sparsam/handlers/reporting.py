"""Reading the object a pass is for, and writing what it found back to it: status (only what
changed) and Events."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import kopf

from sparsam.api.conditions import READY, Condition, set_condition
from sparsam.api.parse import InvalidSpec, from_raw
from sparsam.controllers.results import Event, PassResult

T = TypeVar("T")


class _WithConditions(Protocol):
    @property
    def conditions(self) -> Sequence[Condition]: ...


#: A kind's status model (for the conditions an invalid spec's status keeps).
StatusType = type[_WithConditions]


def changed(body: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `status` that differ from the object's, so an idle object writes nothing.

    A field the report removes (None) goes with every write that changes anything else: the
    body can predate our own last write (the watch lags behind the patch), so "absent here"
    does not prove it is absent on the server, and a suspended job must not keep a startTime
    that a late Running report set.
    """
    current = body.get("status") or {}
    diff = {key: value for key, value in status.items() if current.get(key) != value}
    if diff:
        diff.update({key: None for key, value in status.items() if value is None})
    return diff


def write_status(body: kopf.Body, patch: kopf.Patch, status: Mapping[str, Any]) -> None:
    """Patch only the status fields that changed."""
    patch.status.update(changed(body, status))


def post(body: kopf.Body, events: Iterable[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def report(body: kopf.Body, patch: kopf.Patch, result: PassResult) -> None:
    """A pass's result: its status (what changed) and its Events."""
    write_status(body, patch, result.status)
    post(body, result.events)


class LastParsed(Generic[T]):
    """`model(body)`, parsed again only when the object's resourceVersion changed: a running
    job's passes read the same body every few seconds, and parsing it was a tenth of the
    operator's CPU with 500 of them. The models are frozen, so one can be handed out twice.
    Called from the event loop only (the handlers), so no lock."""

    def __init__(self, model: Callable[[kopf.Body], T]) -> None:
        self._model = model
        self._last: dict[str, tuple[str, T]] = {}

    def __call__(self, body: kopf.Body) -> T:
        meta = body.get("metadata") or {}
        uid, version = str(meta.get("uid")), meta.get("resourceVersion")
        last = self._last.get(uid)
        if last is not None and version is not None and last[0] == version:
            return last[1]
        parsed = self._model(body)
        if version is not None:
            self._last[uid] = (str(version), parsed)
        return parsed

    def forget(self, uid: str) -> None:
        self._last.pop(uid, None)


def read(
    body: kopf.Body,
    patch: kopf.Patch,
    model: Callable[[kopf.Body], T],
    status_type: StatusType,
    now: datetime,
) -> T | None:
    """The typed object, or None after reporting Ready=False InvalidSpec (see invalid_spec)."""
    try:
        return model(body)
    except InvalidSpec as exc:
        write_status(body, patch, invalid_spec(body, status_type, str(exc), now))
        return None


def invalid_spec(
    body: kopf.Body, status_type: StatusType, message: str, now: datetime
) -> dict[str, Any]:
    """The status patch for an object whose spec the model cannot read (what CEL cannot
    express): Ready=False, reason InvalidSpec, the message naming the field. Nothing else is
    done with such an object, and nothing is retried until it changes."""
    try:
        status = from_raw(status_type, dict(body.get("status") or {}), "status")
        conditions: Sequence[Condition] = status.conditions
    except InvalidSpec:
        conditions = ()
    updated = set_condition(conditions, READY, "False", "InvalidSpec", message, now)
    return {"conditions": [cond.to_raw() for cond in updated]}
