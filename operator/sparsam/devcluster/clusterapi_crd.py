"""Cluster API's CRDs, for tests of the Cluster API node pool provider: fetched, never vendored.

`tools.module_dir` downloads `sigs.k8s.io/cluster-api@<version>` through the Go module proxy
(as it does KWOK's, for its stages); the CRD's YAML is copied from the module's
`config/crd/bases/` into `tools.cache_root()/cluster-api-<version>/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.lock import file_lock
from sparsam.devcluster.tools import cache_root, module_dir

#: v1beta1 is this release's storage version, and what the provider writes.
CLUSTER_API_VERSION: Final = "v1.10.10"
MODULE: Final = "sigs.k8s.io/cluster-api"
MACHINE_DEPLOYMENTS: Final = "cluster.x-k8s.io_machinedeployments.yaml"
MACHINES: Final = "cluster.x-k8s.io_machines.yaml"


def crd_path(file: str = MACHINE_DEPLOYMENTS, version: str = CLUSTER_API_VERSION) -> Path:
    """The cached CRD file (one of `config/crd/bases/*.yaml`), fetched on first use."""
    folder = cache_root() / f"cluster-api-{version}"
    target = folder / file
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f"cluster-api-{version}.lock"):
        if target.is_file():
            return target
        source = module_dir(MODULE, version, folder / "fetch.log") / "config/crd/bases" / file
        if not source.is_file():
            raise DevClusterError(f"{MODULE}@{version} has no config/crd/bases/{file}")
        staging = folder / f".{file}.tmp"
        staging.write_text(source.read_text())
        staging.rename(target)
    return target
