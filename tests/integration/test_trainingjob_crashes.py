"""The operator killed in the middle of a TrainingJob pass (and of a GPUNodePool pass's drain)
and restarted: no duplicate pods, no lost state.

Each case starts `sparsam run` with one failpoint armed (`sparsam.failpoints`,
SPARSAM_FAILPOINTS), drives the job until a pass reaches that point, checks that the process
died there (exit 137, as a SIGKILL or an OOM kill leaves it: nothing after the point done, no
status written), restarts the operator without the failpoint, and checks what the restarted
operator makes of it: the job reaches the state it should, every worker index exists exactly
once, the pods created before the crash are kept (same uid), nothing else appears in the
namespace and nothing churns, status.restarts and status.preemptions are what they should be,
and the restarted operator logs no error.

They assume theirs is the only `sparsam run` on the cluster, as every integration test with an
operator does: another one would act on the job while this one is down. Pods on KWOK nodes
run no containers, so a worker's exit is written into its status as the kubelet would
(`exit_worker`).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Cluster, Kubectl
from tests.integration.test_trainingjob_controller import (
    REPORT,
    exit_worker,
    running,
    small_pool,
    status,
)
from tests.operator_process import (
    Operator,
    apply,
    eventually,
    get,
    object_events,
    pool,
    pool_nodes,
    trainingjob,
)

from sparsam.demo.hostpods import host_volume
from sparsam.failpoints import ENV, EXIT_CODE

#: How long the restarted operator is watched for creating or deleting anything more.
SETTLE_SECONDS = 3.0
WORKERS = {"tj-worker-0", "tj-worker-1"}


@dataclass
class Crash:
    """One test's namespace, pool and operators (the last one is the current one)."""

    kubectl: Kubectl
    cluster: Cluster
    namespace: str
    gpu_type: str
    pool: str
    logs: Path
    operators: list[Operator] = field(default_factory=list)
    #: What a case remembers between its steps (e.g. a pod's uid before the crash).
    notes: dict[str, str] = field(default_factory=dict)
    #: kubectl arguments run at teardown.
    cleanup: list[tuple[str, ...]] = field(default_factory=list)

    def start(self, log: str, failpoint: str = "") -> Operator:
        # Set even when empty, so that a SPARSAM_FAILPOINTS of the test run itself never
        # reaches the operator that must not crash.
        # Armed for this test's namespace only: other jobs on the cluster pass the same points.
        armed = f"{failpoint}@{self.namespace}" if failpoint.startswith("training.") else failpoint
        op = Operator(self.cluster.kubeconfig, self.logs / log, env={ENV: armed})
        self.operators.append(op)
        op.start()
        return op

    @property
    def operator(self) -> Operator:
        return self.operators[-1]

    def pods(self, role: str | None = None) -> dict[str, dict[str, Any]]:
        """The namespace's pods (of `role`) by name, those on their way out included."""
        selector = ("-l", f"sparsam.dev/role={role}") if role else ()
        items = get(self.kubectl, "pods", "-n", self.namespace, *selector)["items"]
        return {p["metadata"]["name"]: p for p in items}

    def uids(self, role: str | None = None) -> dict[str, str]:
        return {name: p["metadata"]["uid"] for name, p in self.pods(role).items()}

    def status(self) -> dict[str, Any]:
        return status(self.kubectl, self.namespace)

    def until_phase(self, phase: str, check: Callable[[dict[str, Any]], bool] | None = None) -> Any:
        return eventually(
            f"status.phase {phase}",
            lambda: (
                (s := self.status()).get("phase") == phase and (check is None or check(s)) and s
            ),
            self.operator,
        )


@pytest.fixture
def crash(
    cluster: Cluster,
    kubectl: Kubectl,
    namespace: str,
    gpu_type: str,
    cluster_scoped_name: Callable[[str, str], str],
    tmp_path: Path,
) -> Iterator[Crash]:
    rivals = other_operators(cluster.kubeconfig)
    if rivals:
        pytest.fail(
            f"another sparsam run acts on this cluster ({rivals}); these tests need it alone"
        )
    state = Crash(
        kubectl, cluster, namespace, gpu_type, cluster_scoped_name("gpunodepool", "spot"), tmp_path
    )
    yield state
    # The pool is retired by an operator (its finalizer): delete it while one runs.
    if (
        not state.operators
        or state.operator.process is None
        or state.operator.process.poll() is not None
    ):
        state.start("cleanup.log")
    kubectl("delete", "gpunodepool", state.pool, "--ignore-not-found", "--timeout=60s", check=False)
    for op in state.operators:
        op.kill()
    for args in state.cleanup:
        kubectl(*args, check=False)


def other_operators(kubeconfig: Path) -> list[int]:
    """Pids of `sparsam run` processes on this machine with this cluster's kubeconfig."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        command = b"sparsam.cli" in args or any(a.endswith(b"/sparsam") for a in args)
        if command and b"run" in args and f"--kubeconfig={kubeconfig}".encode() in args:
            found.append(int(cmdline.parent.name))
    return found


def two_workers(crash: Crash, least: int = 2) -> list[dict[str, Any]]:
    """A spot pool of 1-GPU nodes and a job of two workers, `least` of them needed to start
    (the first batch of creates)."""
    job = trainingjob("tj", crash.namespace, crash.gpu_type, workers={"min": least, "max": 2})
    return [small_pool(crash.pool, crash.gpu_type), job]


def running_with_two(crash: Crash) -> dict[str, Any]:
    """Wait until both workers run and status says so."""
    eventually(
        "both workers running",
        lambda: set(running(crash.kubectl, crash.namespace)) == WORKERS,
        crash.operator,
    )
    found: dict[str, Any] = crash.until_phase(
        "Running", lambda s: s["workers"] == {"desired": 2, "running": 2}
    )
    return found


def settled(crash: Crash) -> dict[str, str]:
    """The namespace's pods stay the same over a few passes: nothing more is created or
    deleted. Returns their uids."""
    first = crash.uids()
    time.sleep(SETTLE_SECONDS)
    assert crash.uids() == first
    return first


def only_workers(crash: Crash, names: set[str]) -> dict[str, str]:
    """Every pod in the namespace is one of the job's workers `names`, each exactly once and
    none on its way out (names are unique, so a duplicate would be an extra name)."""
    pods = crash.pods()
    assert set(pods) == names
    assert not [n for n, p in pods.items() if p["metadata"].get("deletionTimestamp")]
    assert {p["metadata"]["labels"]["sparsam.dev/role"] for p in pods.values()} == {"worker"}
    return {n: p["metadata"]["uid"] for n, p in pods.items()}


def counted(found: dict[str, Any], restarts: int = 0, preemptions: int = 0) -> None:
    assert (found.get("restarts"), found.get("preemptions")) == (restarts, preemptions)


# --- training.after-service: the Service applied, the first batch maybe (created beside it) --


def service_provoke(crash: Crash) -> None:
    crash.start("armed.log", "training.after-service")
    apply(crash.kubectl, *two_workers(crash))


def service_at_crash(crash: Crash) -> None:
    assert get(crash.kubectl, "service", "tj", "-n", crash.namespace)["spec"]["clusterIP"] == "None"
    assert set(crash.pods()) <= WORKERS
    assert "phase" not in crash.status()


def service_after(crash: Crash, before: dict[str, str]) -> None:
    counted(running_with_two(crash))
    only_workers(crash, WORKERS)
    settled(crash)


# --- training.between-workers: worker 0 (the first batch: min 1) created, worker 1 not -----


def between_provoke(crash: Crash) -> None:
    crash.start("armed.log", "training.between-workers")
    apply(crash.kubectl, *two_workers(crash, least=1))


def between_at_crash(crash: Crash) -> None:
    assert set(crash.pods()) == {"tj-worker-0"}
    assert "phase" not in crash.status()


def between_after(crash: Crash, before: dict[str, str]) -> None:
    counted(running_with_two(crash))
    uids = only_workers(crash, WORKERS)
    assert uids["tj-worker-0"] == before["tj-worker-0"]  # kept, not replaced
    assert settled(crash) == uids


# --- training.after-count: a failed worker's count and uid in status, the pod not deleted ----


def fail_worker_one(crash: Crash, failpoint: str) -> None:
    """Two workers running under an unarmed operator, then one armed at `failpoint`, and
    worker 1's program fails."""
    crash.start("before.log")
    apply(crash.kubectl, *two_workers(crash))
    counted(running_with_two(crash))
    crash.operator.kill()
    crash.notes.update(crash.uids())
    crash.start("armed.log", failpoint)
    exit_worker(crash.kubectl, crash.namespace, "tj-worker-1", 1)  # a program failure


def count_provoke(crash: Crash) -> None:
    fail_worker_one(crash, "training.after-count")


def count_at_crash(crash: Crash) -> None:
    left = crash.pods()
    assert left["tj-worker-1"]["metadata"]["uid"] == crash.notes["tj-worker-1"]
    assert not left["tj-worker-1"]["metadata"].get("deletionTimestamp")  # not deleted yet
    found = crash.status()
    counted(found, restarts=1)  # written before the delete, with the pod it counts
    assert found["countedPods"] == [crash.notes["tj-worker-1"]]


def worker_one_replaced(crash: Crash) -> dict[str, Any]:
    """Both workers run again: worker 1 replaced under its own name, worker 0 kept (uids as
    noted before the crash), nothing else churning. Returns the job's status."""
    found = running_with_two(crash)
    uids = only_workers(crash, WORKERS)
    assert uids["tj-worker-0"] == crash.notes["tj-worker-0"]
    assert uids["tj-worker-1"] != crash.notes["tj-worker-1"]
    assert settled(crash) == uids
    return found


def replaced_and_counted_once(crash: Crash) -> None:
    """Worker 1 replaced, the failure counted exactly once and status.countedPods empty again
    once the pod is gone."""
    counted(worker_one_replaced(crash), restarts=1)
    eventually("countedPods cleared", lambda: "countedPods" not in crash.status(), crash.operator)
    # The WorkerFailed Event was the dead pass's to post: Events are best effort (as in
    # Kubernetes itself), the count in status is the record. Never posted twice.
    failed = [e for e in object_events(crash.kubectl, "tj") if e.startswith("WorkerFailed")]
    assert len(failed) <= 1


def count_after(crash: Crash, before: dict[str, str]) -> None:
    replaced_and_counted_once(crash)


# --- training.after-delete: the failed worker counted and deleted, no replacement created ----


def delete_provoke(crash: Crash) -> None:
    fail_worker_one(crash, "training.after-delete")


def delete_at_crash(crash: Crash) -> None:
    left = crash.pods()
    failed = left.get("tj-worker-1")
    # Deleted: gone already, or on its way out.
    assert failed is None or failed["metadata"].get("deletionTimestamp")
    assert left["tj-worker-0"]["metadata"]["uid"] == crash.notes["tj-worker-0"]
    counted(crash.status(), restarts=1)  # the count went to status before the delete


def delete_after(crash: Crash, before: dict[str, str]) -> None:
    replaced_and_counted_once(crash)


# --- training.before-status: both workers created, status not written ------------------------


def status_provoke(crash: Crash) -> None:
    crash.start("armed.log", "training.before-status")
    apply(crash.kubectl, *two_workers(crash))


def status_at_crash(crash: Crash) -> None:
    assert set(crash.pods()) == WORKERS
    assert "phase" not in crash.status()


def status_after(crash: Crash, before: dict[str, str]) -> None:
    found = running_with_two(crash)
    counted(found)
    assert found["startTime"]
    uids = only_workers(crash, WORKERS)
    assert uids == before  # both kept: none created twice, none replaced
    assert settled(crash) == uids


# --- training.after-compress-pod: training done, the compress pod created, status still
# Running ------------------------------------------------------------------------------------


def compress_provoke(crash: Crash) -> None:
    volume, claim = host_volume(crash.namespace, "ckpt", "ReadWriteMany")
    apply(crash.kubectl, volume, claim)
    crash.cleanup += [
        ("delete", "pvc", "ckpt", "-n", crash.namespace, "--wait=false"),
        ("delete", "pv", volume["metadata"]["name"], "--wait=false"),
    ]
    spec = {
        "workers": {"min": 1, "max": 1},
        "checkpoint": {"volumeClaim": "ckpt", "path": "/ckpt"},
        "compression": {"quantization": {"mode": "dynamic"}, "maxAccuracyDrop": 0.02},
        "deploy": {"inferenceService": "digits", "minReplicas": 0, "maxReplicas": 2},
    }
    crash.start("before.log")
    apply(
        crash.kubectl,
        small_pool(crash.pool, crash.gpu_type),
        trainingjob("tj", crash.namespace, crash.gpu_type, **spec),
    )
    eventually(
        "the worker running", lambda: running(crash.kubectl, crash.namespace), crash.operator
    )
    crash.until_phase("Running")
    crash.operator.kill()
    crash.notes.update(crash.uids())
    crash.start("armed.log", "training.after-compress-pod")
    exit_worker(crash.kubectl, crash.namespace, "tj-worker-0", 0)  # training finished


def compress_at_crash(crash: Crash) -> None:
    assert set(crash.pods()) == {"tj-worker-0", "tj-compress"}
    assert crash.status()["phase"] == "Running"  # not Succeeded, not Compressing: not written


def compress_after(crash: Crash, before: dict[str, str]) -> None:
    found = crash.until_phase("Compressing")
    counted(found)
    # The compress pod the crashed pass created is the one, not a second; the finished
    # worker is neither replaced nor counted.
    assert crash.uids("compress") == {"tj-compress": before["tj-compress"]}
    assert crash.uids("worker") == {"tj-worker-0": crash.notes["tj-worker-0"]}
    assert settled(crash) == before

    def compress_running() -> bool:
        pod = crash.pods("compress").get("tj-compress")
        return pod is not None and pod["status"].get("phase") == "Running"

    eventually("the compress pod running", compress_running, crash.operator)
    exit_worker(crash.kubectl, crash.namespace, "tj-compress", 0, REPORT, container="compress")
    final = crash.until_phase("Succeeded")
    counted(final)
    assert final["model"] == {"uri": "pvc://ckpt/tj/compressed/model"}
    assert final["compression"]["accepted"] is True
    served = get(crash.kubectl, "inferenceservice", "digits", "-n", crash.namespace)
    assert served["spec"]["model"]["uri"] == "pvc://ckpt/tj/compressed/model"


# --- capacity.after-cordon: the job scaled down, its idle node cordoned for removal, nothing
# else done -----------------------------------------------------------------------------------


def cordon_provoke(crash: Crash) -> None:
    spot = pool(crash.pool, crash.gpu_type, "spot", scaleDownAfter="2s")
    spot["spec"]["nodeTemplate"]["gpusPerNode"] = 1
    crash.start("before.log")
    job = trainingjob("tj", crash.namespace, crash.gpu_type, workers={"min": 1, "max": 2})
    apply(crash.kubectl, spot, job)
    running_with_two(crash)
    crash.operator.kill()
    crash.notes.update(crash.uids())
    crash.notes.update(
        {f"node of {w}": n for w, n in running(crash.kubectl, crash.namespace).items()}
    )
    crash.start("armed.log", "capacity.after-cordon")
    # Worker 1 goes (a scale-down, not a preemption); its node idles, and is drained.
    crash.kubectl("scale", "trainingjob", "tj", "-n", crash.namespace, "--replicas=1")


def cordoned(crash: Crash) -> dict[str, bool]:
    """The pool's nodes: name -> cordoned."""
    return {
        n["metadata"]["name"]: bool(n["spec"].get("unschedulable"))
        for n in pool_nodes(crash.kubectl, crash.pool)
    }


def cordon_at_crash(crash: Crash) -> None:
    assert cordoned(crash) == {
        crash.notes["node of tj-worker-0"]: False,
        crash.notes["node of tj-worker-1"]: True,
    }


def cordon_after(crash: Crash, before: dict[str, str]) -> None:
    kept = crash.notes["node of tj-worker-0"]
    eventually(
        "the cordoned node removed, the other one kept and schedulable",
        lambda: cordoned(crash) == {kept: False},
        crash.operator,
    )
    found = crash.until_phase("Running", lambda s: s["workers"] == {"desired": 1, "running": 1})
    counted(found)  # a scale-down and a drain of an idle node are not preemptions
    uids = only_workers(crash, {"tj-worker-0"})
    assert uids == {"tj-worker-0": crash.notes["tj-worker-0"]}
    assert settled(crash) == uids
    assert cordoned(crash) == {kept: False}


@dataclass(frozen=True)
class Case:
    failpoint: str
    #: Everything up to the crash: set-up, the armed operator started, the pass driven there.
    provoke: Callable[[Crash], None]
    #: What the dead pass left behind.
    at_crash: Callable[[Crash], None]
    #: With the operator restarted; gets the uid of every pod of the namespace at the crash.
    after: Callable[[Crash, dict[str, str]], None]


CASES = [
    Case("training.after-service", service_provoke, service_at_crash, service_after),
    Case("training.between-workers", between_provoke, between_at_crash, between_after),
    Case("training.after-count", count_provoke, count_at_crash, count_after),
    Case("training.after-delete", delete_provoke, delete_at_crash, delete_after),
    Case("training.before-status", status_provoke, status_at_crash, status_after),
    Case("training.after-compress-pod", compress_provoke, compress_at_crash, compress_after),
    Case("capacity.after-cordon", cordon_provoke, cordon_at_crash, cordon_after),
]


@pytest.mark.parametrize("case", CASES, ids=[case.failpoint for case in CASES])
def test_a_crash_mid_pass_leaves_no_duplicate_pods_and_no_lost_state(
    crash: Crash, case: Case
) -> None:
    case.provoke(crash)
    armed = crash.operator
    assert armed.process is not None
    try:
        code = armed.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the operator never reached {case.failpoint}\n{armed.tail()}")
    # It died at the failpoint, and nowhere else.
    assert code == EXIT_CODE, armed.tail()
    assert f"failpoint {case.failpoint}: exiting as a crash would" in armed.tail()
    case.at_crash(crash)
    before = crash.uids()

    restarted = crash.start("restarted.log")
    case.after(crash, before)
    assert restarted.process is not None and restarted.process.poll() is None
    # The cluster is shared: a job of an earlier case whose namespace is being deleted is
    # refused new objects ("... because it is being terminated"), which Kopf logs as an
    # ERROR it retries. That is about the other namespace, not this crash.
    problems = [
        line
        for line in restarted.log.read_text(errors="replace").splitlines()
        if ("Traceback" in line or " ERROR " in line) and "is being terminated" not in line
    ]
    assert not problems, "\n".join(problems[:20])


def test_a_worker_lost_while_the_operator_is_down_is_counted_and_replaced(crash: Crash) -> None:
    """Not a crash inside a pass but between two: a worker evicted and gone while no operator
    runs is still a preemption (status.workerPods holds what the last pass left running)."""
    crash.start("before.log")
    apply(crash.kubectl, *two_workers(crash))
    counted(running_with_two(crash))
    eventually(
        "workerPods written",
        lambda: len(crash.status().get("workerPods") or ()) == 2,
        crash.operator,
    )
    crash.operator.kill()
    crash.notes.update(crash.uids())
    crash.kubectl(
        "delete", "pod", "tj-worker-1", "-n", crash.namespace, "--grace-period=0", "--force"
    )
    eventually("the pod gone", lambda: "tj-worker-1" not in crash.pods(), None)

    restarted = crash.start("restarted.log")
    counted(worker_one_replaced(crash), preemptions=1)
    assert restarted.process is not None and restarted.process.poll() is None
