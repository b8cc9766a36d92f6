"""The lean diff base: Kopf's own essence for the kinds whose handlers read a diff, an empty
one for the rest, and a registry whose changing handlers are all on diffed kinds."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from sparsam import main
from sparsam.api import constants as c
from sparsam.config import OperatorConfig
from sparsam.handlers.diffbase import DIFFED, LeanDiffBaseStorage

_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "tj-worker-0",
        "namespace": "ml",
        "uid": "u-1",
        "labels": {"sparsam.dev/job": "tj"},
        "annotations": {
            "note": "kept",
            "sparsam.dev/last-handled-configuration": '{"spec": {}}\n',
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
        "ownerReferences": [{"kind": "TrainingJob", "name": "tj", "uid": "j-1"}],
        "managedFields": [{"manager": "sparsam", "fieldsV1": {"f:spec": {}}}],
    },
    "spec": {"nodeName": "n-1", "containers": [{"name": "trainer", "env": [{"name": "A"}]}]},
    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
}
_ARGS: dict[str, Any] = {"prefix": "sparsam.dev", "key": "last-handled-configuration"}


@pytest.mark.parametrize("extra", [None, ["status.phase"]], ids=["plain", "extra-fields"])
def test_a_diffed_kind_has_kopfs_own_essence(extra: list[str] | None) -> None:
    lean = LeanDiffBaseStorage(diffed={("v1", "Pod")}, **_ARGS)

    built = lean.build(body=kopf.Body(_POD), extra_fields=extra)

    kopfs = kopf.AnnotationsDiffBaseStorage(**_ARGS).build(body=kopf.Body(_POD), extra_fields=extra)
    assert built == kopfs and built["spec"] == _POD["spec"]


def test_any_other_kind_has_an_empty_essence_and_one_without_a_kind_kopfs() -> None:
    lean = LeanDiffBaseStorage(diffed=DIFFED, **_ARGS)
    assert lean.build(body=kopf.Body(_POD)) == {}
    kindless = {k: v for k, v in _POD.items() if k != "kind"}
    assert lean.build(body=kopf.Body(kindless))["spec"] == _POD["spec"]


def test_every_handler_that_reads_a_diff_is_on_a_diffed_kind() -> None:
    """Changing handlers, and timers or daemons with idle=, are all that read Kopf's diff."""
    registry = main.registry(OperatorConfig())
    by_plural = {res.plural: (c.API_VERSION, res.kind) for res in c.RESOURCES}
    readers = [
        *registry._changing.get_all_handlers(),
        *(h for h in registry._spawning.get_all_handlers() if getattr(h, "idle", None)),
    ]
    assert readers  # GPUNodePool's on.delete, at least
    for handler in readers:
        assert handler.selector is not None
        kind = by_plural.get(handler.selector.any_name or "")
        assert kind in DIFFED, f"{handler.id} reads a diff of {handler.selector}: add it to DIFFED"
