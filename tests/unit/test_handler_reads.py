"""What the handlers read before a pass: the typed object (parsed once per resourceVersion)
and the nodes its pods are on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kopf

from sparsam import main
from sparsam.config import OperatorConfig
from sparsam.handlers import indexes
from sparsam.handlers.reporting import LastParsed, changed


def _body(version: str | None, image: str) -> kopf.Body:
    meta: dict[str, Any] = {"name": "tj", "uid": "u-1"}
    if version is not None:
        meta["resourceVersion"] = version
    return kopf.Body({"metadata": meta, "spec": {"image": image}})


def test_an_object_is_parsed_again_only_when_its_resource_version_changed() -> None:
    calls: list[str] = []

    def model(body: kopf.Body) -> str:
        calls.append(body["spec"]["image"])
        return str(body["spec"]["image"])

    parse = LastParsed(model)
    assert parse(_body("1", "a")) == "a"
    assert parse(_body("1", "ignored")) == "a"  # same version: the same object
    assert parse(_body("2", "b")) == "b"
    assert parse(_body(None, "c")) == "c" and parse(_body(None, "d")) == "d"  # no version
    parse.forget("u-1")
    assert parse(_body("2", "e")) == "e"
    assert calls == ["a", "b", "c", "d", "e"]


def test_a_pass_gets_the_nodes_its_pods_are_on_and_no_others() -> None:
    views = {name: {"metadata": {"name": name}} for name in ("n1", "n2", "n3")}
    kwargs = {"node_index": {name: [view] for name, view in views.items()}}
    pods = [
        {"spec": {"nodeName": "n1"}},
        {"spec": {"nodeName": "gone"}},  # its node was deleted: absent, as from the cache
        {"spec": {}},  # not scheduled yet
        {"metadata": {"name": "no-spec"}},
    ]
    assert indexes.nodes_of(kwargs, pods) == {"n1": views["n1"]}


class _Index(kopf.Index[Any, Any]):
    """An empty index, as Kopf passes one to a handler."""

    def __getitem__(self, key: Any) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_a_pass_outside_a_handler_gets_every_index_the_operator_keeps() -> None:
    registry = main.registry(OperatorConfig())
    ids = {str(handler.id) for handler in registry._indexing.get_all_handlers()}
    kwargs = {index: _Index() for index in ids} | {"body": {}, "memo": None}
    assert set(indexes.live(kwargs)) == ids  # no index left out, and nothing else


def test_a_removed_field_goes_with_any_other_change_even_when_the_body_lacks_it() -> None:
    # The body was read before our own write of startTime reached the watch.
    stale = {"status": {"phase": "Running"}}
    report = {"phase": "Suspended", "startTime": None}
    assert changed(stale, report) == {"phase": "Suspended", "startTime": None}


def test_an_idle_object_writes_nothing_not_even_its_removals() -> None:
    body = {"status": {"phase": "Suspended"}}
    assert changed(body, {"phase": "Suspended", "startTime": None}) == {}
