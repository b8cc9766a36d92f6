"""`sparsam run --peering`: replicas meet in a ClusterKopfPeering and only the one of the
highest priority acts; the others pause, and take over when it goes. Real operators on the
dev cluster (its CRDs include Kopf's ClusterKopfPeering, as the chart's do)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.conftest import Cluster, Kubectl
from tests.operator_process import Operator, apply, eventually, get, pool, trainingjob

from sparsam.kube.client import api_client
from sparsam.kube.peering import PeeringGate


@pytest.fixture
def peering(kubectl: Kubectl, cluster_scoped_name: Callable[[str, str], str]) -> Iterator[str]:
    name = cluster_scoped_name("clusterkopfpeering", "ops")
    apply(
        kubectl,
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}},
    )
    yield name  # deleted with the test's other cluster-scoped objects


def logged(op: Operator, text: str) -> bool:
    return text in op.log.read_text(errors="replace")


def workers_of(kubectl: Kubectl, namespace: str, job: str) -> set[str]:
    pods = get(kubectl, "pods", "-n", namespace, "-l", f"sparsam.dev/job={job}")["items"]
    return {p["metadata"]["name"] for p in pods}


def test_only_the_highest_priority_replica_acts_and_another_takes_over(
    kubectl: Kubectl,
    cluster: Cluster,
    namespace: str,
    gpu_type: str,
    peering: str,
    tmp_path: Path,
    cluster_scoped_name: Callable[[str, str], str],
) -> None:
    # A pool that can hold the jobs: a job that no pool and no node could ever hold is
    # Unschedulable and gets no workers at all.
    spot = cluster_scoped_name("gpunodepool", "spot")
    high = Operator(
        cluster.kubeconfig, tmp_path / "high.log", f"--peering={peering}", "--priority=10"
    )
    low = Operator(cluster.kubeconfig, tmp_path / "low.log", f"--peering={peering}", "--priority=0")
    high.start()
    try:
        eventually(
            "the first replica in the peering",
            lambda: get(kubectl, "clusterkopfpeering", peering).get("status"),
            high,
        )
        low.start()
        eventually(
            "both replicas in the peering",
            lambda: len(get(kubectl, "clusterkopfpeering", peering).get("status") or {}) == 2,
            low,
        )

        apply(kubectl, pool(spot, gpu_type, "spot"))
        apply(kubectl, trainingjob("first", namespace, gpu_type))
        eventually(
            "the first job's workers",
            lambda: workers_of(kubectl, namespace, "first") == {"first-worker-0", "first-worker-1"},
            high,
        )
        # A replica starts paused and resumes only once it sees no peer above it: the lower
        # one never did, and ran no handler.
        assert not logged(low, "Resuming operations"), low.tail()
        assert not logged(low, "kopf.objects"), low.tail()  # no handler of any object
        assert not logged(high, "Pausing operations"), high.tail()

        # The active replica stops (a rollout, a drained node): it leaves the peering on its
        # way out, and the other resumes at once rather than after its lifetime.
        high.stop()
        eventually("the other replica resumed", lambda: logged(low, "Resuming operations"), low)
        apply(kubectl, trainingjob("second", namespace, gpu_type))
        eventually(
            "the second job's workers, from the replica that took over",
            lambda: (
                workers_of(kubectl, namespace, "second") == {"second-worker-0", "second-worker-1"}
            ),
            low,
        )
    finally:
        kubectl("delete", "trainingjobs", "--all", "-n", namespace, "--timeout=60s", check=False)
        # While an operator runs: a pool's finalizer goes once its nodes are drained.
        kubectl("delete", "gpunodepool", spot, "--timeout=60s", check=False)
        high.stop()
        low.stop()


def test_a_named_peering_that_does_not_exist_stops_the_operator(
    cluster: Cluster, tmp_path: Path
) -> None:
    op = Operator(cluster.kubeconfig, tmp_path / "op.log", "--peering=no-such-peering")
    op.start()
    assert op.process is not None
    try:
        code = op.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        op.kill()
        pytest.fail(f"the operator ran without its peering object\n{op.tail()}")
    assert code != 0
    said = op.log.read_text(errors="replace")
    assert "there is no ClusterKopfPeering 'no-such-peering'" in said, said
    assert "Traceback" not in said


def test_the_training_passes_gate_follows_kopfs_rule_on_the_real_peering_object(
    kubectl: Kubectl, cluster: Cluster, peering: str
) -> None:
    """The TrainingJob passes run outside Kopf's handlers, so Kopf's pause does not stop
    them: `PeeringGate` reads the peering object as Kopf does, and closes while a live peer of
    a higher priority is in it (a laptop taking over from the chart's replica)."""
    # No hold: this checks the rule on the real object (the hold has a unit test).
    gate = PeeringGate(
        api_client(cluster.kubeconfig), peering, identity="in-cluster", priority=5, hold=0
    )
    assert not gate()  # closed until its first read, as Kopf starts paused

    def peers(laptop_priority: int) -> None:
        seen = datetime.now(UTC).isoformat()
        apply(
            kubectl,
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": peering},
                "status": {
                    "in-cluster": {"priority": 5, "lastseen": seen, "lifetime": 60},
                    "laptop": {"priority": laptop_priority, "lastseen": seen, "lifetime": 60},
                },
            },
        )
        gate.read()

    peers(laptop_priority=1)
    assert gate()
    peers(laptop_priority=10)
    assert not gate()
    peers(laptop_priority=1)
    assert gate()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gpu_seconds(port: int, job: str) -> float:
    """What the operator on `port` has counted of `job`'s GPU time: its passes' accrual."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return 0.0  # not serving yet
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sparsam_gpu_seconds_total{") and f'name="{job}"' in line
    )


def test_a_replica_a_higher_one_joins_stops_its_training_passes(
    kubectl: Kubectl,
    cluster: Cluster,
    namespace: str,
    gpu_type: str,
    peering: str,
    cluster_scoped_name: Callable[[str, str], str],
    tmp_path: Path,
) -> None:
    """Kopf pauses its watches and timers, not the passes (of TrainingJobs and others), which
    run from our own queues: the gate must stop those too, or two replicas would act on the
    same jobs. A replica's passes are seen in its GPU-seconds counter, which each pass moves
    while the job's workers run."""
    port = free_port()
    low = Operator(
        cluster.kubeconfig,
        tmp_path / "low.log",
        f"--peering={peering}",
        "--priority=0",
        f"--metrics-port={port}",
    )
    high = Operator(
        cluster.kubeconfig, tmp_path / "high.log", f"--peering={peering}", "--priority=10"
    )
    spot = cluster_scoped_name("gpunodepool", "spot")
    low.start()
    try:
        apply(kubectl, pool(spot, gpu_type, "spot"))
        apply(kubectl, trainingjob("tj", namespace, gpu_type))
        eventually(
            "the lower replica counting the job's GPU time",
            lambda: gpu_seconds(port, "tj") > 0,
            low,
        )

        high.start()
        eventually(
            "the lower replica's passes paused",
            lambda: logged(low, "the work queues' passes paused"),
            low,
        )
        counted = gpu_seconds(port, "tj")
        time.sleep(4)  # four of its 1 s passes, had they run
        assert gpu_seconds(port, "tj") == counted, low.tail()
        assert logged(low, "Pausing operations"), low.tail()  # Kopf's own pause, beside ours
    finally:
        kubectl("delete", "trainingjobs", "--all", "-n", namespace, "--timeout=60s", check=False)
        # While an operator runs: a pool's finalizer goes once its nodes are drained.
        kubectl("delete", "gpunodepool", spot, "--timeout=60s", check=False)
        high.stop()
        low.stop()
