"""Cluster API's CRDs come from the Go module proxy, cached; without Go, one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsam.devcluster import clusterapi_crd
from sparsam.devcluster.errors import DevClusterError


def test_without_go_it_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARSAM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DevClusterError, match=r"Go toolchain \(go\) is not on PATH"):
        clusterapi_crd.crd_path()


def test_a_cached_crd_needs_no_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARSAM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    cached = tmp_path / f"cluster-api-{clusterapi_crd.CLUSTER_API_VERSION}"
    cached.mkdir()
    (cached / clusterapi_crd.MACHINE_DEPLOYMENTS).write_text("kind: CustomResourceDefinition\n")
    assert clusterapi_crd.crd_path() == cached / clusterapi_crd.MACHINE_DEPLOYMENTS
