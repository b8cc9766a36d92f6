"""Bring a dev cluster up ready for sparsam: binaries, control plane, our CRDs, GPU nodes, and
real nodes (a kubelet and containerd each) when asked for.

The CLI (`sparsam dev-cluster up`, `sparsam demo`) and the test suite's session fixture both call
`bring_up`, so the tests run on exactly the cluster a user gets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import yaml

from sparsam.devcluster import images, nodeconfig, nodes, realnodes
from sparsam.devcluster.cluster import DevCluster, kubectl_runner
from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.tools import REAL_NODE_TOOLS, TOOLS, Binaries, ensure_binaries

#: The repository's crds/ folder, the single source of truth for the API.
REPO_ROOT: Final = Path(__file__).resolve().parents[3]


def crds_dir() -> Path:
    folder = Path(os.environ.get("SPARSAM_CRDS_DIR", REPO_ROOT / "crds"))
    if not any(folder.glob("*.yaml")):
        raise DevClusterError(
            f"no CRDs in {folder}: run from a sparsam checkout or set SPARSAM_CRDS_DIR"
        )
    return folder


def install_crds(
    kubectl: Callable[..., str], folder: Path | None = None, timeout: float = 60
) -> list[str]:
    """Apply every CRD in `folder` (server-side) and wait until the apiserver serves them."""
    folder = folder or crds_dir()
    names = []
    for path in sorted(folder.glob("*.yaml")):
        kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=sparsam",
            "-f",
            str(path),
        )
        names += [doc["metadata"]["name"] for doc in yaml.safe_load_all(path.read_text()) if doc]
    kubectl(
        "wait",
        "--for=condition=Established",
        f"--timeout={int(timeout)}s",
        *[f"crd/{name}" for name in names],
    )
    return names


def create_gpu_nodes(kubectl: Callable[..., str], timeout: float = 60) -> list[str]:
    """Create the default fleet of KWOK GPU nodes and wait until they are Ready."""
    fleet = nodes.default_fleet()
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=sparsam",
        "-f",
        "-",
        input=yaml.safe_dump_all(fleet),
    )
    names = [node["metadata"]["name"] for node in fleet]
    kubectl(
        "wait",
        "--for=condition=Ready",
        f"--timeout={int(timeout)}s",
        *[f"node/{name}" for name in names],
    )
    return names


def wait_for_default_service_account(
    kubectl: Callable[..., str], namespace: str = "default", timeout: float = 60
) -> None:
    """Pods are admitted only once the controller-manager created the namespace's account."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kubectl("get", "serviceaccount", "default", "-n", namespace, "-o", "name")
            return
        except DevClusterError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


SANDBOX_IMAGE: Final = "pause"


def image_archives(names: Sequence[str]) -> list[images.ImageArchive]:
    """The archives of our images by name (built once, then cached), the sandbox image first."""
    wanted = [SANDBOX_IMAGE, *(n for n in names if n != SANDBOX_IMAGE)]
    return [images.ensure_image(name) for name in dict.fromkeys(wanted)]


def bring_up(
    cluster: DevCluster,
    *,
    gpu_nodes: bool = False,
    real_nodes: int = 0,
    node_images: Sequence[str] = (),
    bin_dir: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Binaries:
    """Everything `sparsam dev-cluster up` does. Returns the binaries it used.

    With `real_nodes`, every check (count, machine, image archives) is made before anything
    starts, and a failure stops what this call started: the nodes, and the control plane if it
    was not running before.
    """
    started = time.monotonic()
    archives: list[images.ImageArchive] = []
    if real_nodes:
        nodeconfig.check_count(real_nodes)
        archives = image_archives(node_images)
        realnodes.preflight(archives)
    log("checking the control plane's binaries (the first build takes about 20 minutes) ...")
    binaries = ensure_binaries(bin_dir, TOOLS + REAL_NODE_TOOLS if real_nodes else TOOLS)
    was_running = cluster.running()
    log(f"starting the control plane in {cluster.dir} ...")
    cluster.up(binaries)
    kubectl = kubectl_runner(binaries["kubectl"], cluster.kubeconfig)
    if real_nodes:
        log(f"starting {real_nodes} real node(s) (kubelet + containerd each) ...")
        try:
            realnodes.add_nodes(
                cluster,
                binaries,
                realnodes.default_specs(real_nodes),
                archives[0],
                archives[1:],
                kubectl,
                log,
            )
        except BaseException:
            if not was_running:
                cluster.down()
            raise
    crds = install_crds(kubectl)
    log(f"installed {len(crds)} CRDs")
    if gpu_nodes:
        names = create_gpu_nodes(kubectl)
        log(f"created {len(names)} GPU nodes: {', '.join(names)}")
    wait_for_default_service_account(kubectl)
    log(f"ready in {time.monotonic() - started:.1f}s; KUBECONFIG={cluster.kubeconfig}")
    return binaries
