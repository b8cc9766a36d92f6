"""The lean diff base builds exactly the essence Kopf's own storage builds."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from sparsam.handlers.diffbase import LeanDiffBaseStorage

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
_REPLICA_SET: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "metadata": {"name": "rs", "ownerReferences": [{"kind": "Deployment", "name": "d"}]},
    "spec": {"replicas": 1},
}
_BARE: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}}


def _storages() -> tuple[kopf.AnnotationsDiffBaseStorage, LeanDiffBaseStorage]:
    args: dict[str, Any] = {"prefix": "sparsam.dev", "key": "last-handled-configuration"}
    return kopf.AnnotationsDiffBaseStorage(**args), LeanDiffBaseStorage(**args)


@pytest.mark.parametrize("raw", [_POD, _REPLICA_SET, _BARE], ids=["pod", "replicaset", "bare"])
@pytest.mark.parametrize("extra", [None, ["status.phase"]], ids=["plain", "extra-fields"])
def test_the_essence_is_kopfs_own(raw: dict[str, Any], extra: list[str] | None) -> None:
    kopfs, lean = _storages()
    before = copy.deepcopy(raw)

    built = lean.build(body=kopf.Body(raw), extra_fields=extra)

    assert built == kopfs.build(body=kopf.Body(raw), extra_fields=extra)
    assert raw == before  # nothing of the body was changed


def test_the_essence_is_a_copy() -> None:
    _, lean = _storages()
    raw = copy.deepcopy(_POD)

    built = lean.build(body=kopf.Body(raw))
    raw["spec"]["containers"][0]["env"].append({"name": "B"})
    raw["metadata"]["labels"]["team"] = "vision"

    assert built["spec"]["containers"][0]["env"] == [{"name": "A"}]
    assert "team" not in built["metadata"]["labels"]
