"""Shared fixtures. Integration tests get a real control plane: the dev cluster, started once per
session by the same code as `sparsam dev-cluster up --gpu-nodes`, or an existing cluster named by
SPARSAM_TEST_KUBECONFIG (with kubectl from SPARSAM_BIN_DIR or PATH)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import yaml
from hypothesis import settings
from tests.operator_process import Operator

from sparsam.demo.hostpods import host_volume
from sparsam.devcluster.bootstrap import bring_up, install_crds
from sparsam.devcluster.cluster import DevCluster, kubectl_runner
from sparsam.devcluster.errors import DevClusterError

INTEGRATION_DIR = Path(__file__).parent / "integration"

# Property tests: random examples on a developer's machine (they find new cases), the same
# examples on every CI run (a failure there is reproducible, never a flake). SPARSAM_HYPOTHESIS
# picks a profile by hand; `long` runs ten times the examples.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("long", max_examples=1000, deadline=None)
settings.load_profile(
    os.environ.get("SPARSAM_HYPOTHESIS", "ci" if os.environ.get("CI") else "default")
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The time spent in each test folder (setup, call and teardown, session fixtures included
    where they were first used), so that a CI log shows where the suite's time goes."""
    per_folder: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            nodeid = getattr(report, "nodeid", "")
            duration = getattr(report, "duration", None)
            if not nodeid or not isinstance(duration, float):
                continue
            folder = "/".join(nodeid.split("::")[0].split("/")[:2])
            per_folder[folder] = per_folder.get(folder, 0.0) + duration
    if per_folder:
        terminalreporter.section("time per test folder")
        for folder, seconds in sorted(per_folder.items(), key=lambda item: -item[1]):
            terminalreporter.write_line(f"{seconds:8.1f}s  {folder}")


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    kubectl: Path
    dev: DevCluster | None  # None when the tests run against an existing cluster


class Kubectl(Protocol):
    def __call__(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    existing = os.environ.get("SPARSAM_TEST_KUBECONFIG")
    if existing:
        found = shutil.which("kubectl", path=os.environ.get("SPARSAM_BIN_DIR")) or shutil.which(
            "kubectl"
        )
        if found is None:
            pytest.fail("SPARSAM_TEST_KUBECONFIG is set but kubectl is not on PATH")
        install_crds(kubectl_runner(Path(found), Path(existing)))
        yield Cluster(Path(existing), Path(found), None)
        return
    dev = DevCluster(f"pytest-{os.getpid()}", root=tmp_path_factory.mktemp("dev-clusters"))
    try:
        binaries = bring_up(dev, gpu_nodes=True)
    except DevClusterError as exc:
        dev.down()
        pytest.fail(f"the dev cluster did not come up: {exc}", pytrace=False)
    try:
        yield Cluster(dev.kubeconfig, binaries["kubectl"], dev)
    finally:
        dev.down()


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Kubectl:
    def run(
        *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(cluster.kubectl), f"--kubeconfig={cluster.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    return run


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    # Pods are admitted only once the controller-manager has made the namespace's account.
    kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=30s")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def cluster_scoped_name(kubectl: Kubectl, namespace: str) -> Iterator[Callable[[str, str], str]]:
    """Names for cluster-scoped objects, unique to this test: `cluster_scoped_name(resource,
    suffix)`. Every object so named is deleted afterwards."""
    named: list[tuple[str, str]] = []

    def name(resource: str, suffix: str) -> str:
        unique = f"{namespace}-{suffix}"[-63:].lstrip("-")
        named.append((resource, unique))
        return unique

    yield name
    for resource, unique in named:
        kubectl("delete", resource, unique, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """`sparsam run` against the test cluster, for the tests of one module."""
    op = Operator(cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture
def gpu_type(namespace: str) -> str:
    """A GPU type of this test's own: pods that select it (nvidia.com/gpu.product) land only on
    this test's pools, never on the dev cluster's static fleet or another test's nodes."""
    return f"TEST-{namespace[-6:].upper()}"


@pytest.fixture
def model_claim(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """The claim `models` in the test's namespace, which InferenceService replicas mount
    (`pvc://models/...`), bound to a volume of its own. Nothing mounts it: KWOK runs no
    containers, and tests that run the server map /models to a host directory. Both are
    deleted afterwards without waiting (the volume's protection finalizer waits for the
    claim, which goes with the namespace)."""
    volume, claim = host_volume(namespace)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([volume, claim]))
    yield claim["metadata"]["name"]
    kubectl(
        "delete", "pvc", claim["metadata"]["name"], "-n", namespace, "--wait=false", check=False
    )
    kubectl("delete", "pv", volume["metadata"]["name"], "--wait=false", check=False)
