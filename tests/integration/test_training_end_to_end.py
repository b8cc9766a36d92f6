"""A TrainingJob end to end with real execution: it trains, is preempted, resumes from its
checkpoint, compresses, and creates its InferenceService; and a job that loses worker 0, whose
agent hosts the rendezvous store, loses both workers and still finishes, with no failure
counted.

Everything Kubernetes does is real (the dev cluster's apiserver and scheduler, `sparsam run`
with the GPUNodePool and TrainingJob controllers); what KWOK cannot do, run the pods' containers,
`HostTrainer` does: for each worker pod running on a node it starts the pod's own command and
environment (`torchrun ... --rdzv-backend=c10d ... python -m sparsam_trainer train`, gloo on CPU)
as a host process, and when the process exits it writes the container's exit code, start and
end, and termination message into the pod's status, as the kubelet would. The same for the
compress pod.

Debian's Prometheus scrapes the workers' checkpoint metrics at their pod IPs (the chart's
PodMonitor has the Prometheus Operator do the same; Debian's build has no Kubernetes
discovery, so `HostTrainer` lists the pods it runs in a file_sd file), and the operator reads
them back (`--prometheus-url`) for status.lastCheckpoint and the measured write time.

Three things differ from a cluster, all because every pod here is one machine: the checkpoint
claim is a host directory (the pod's paths are mapped to it); the rendezvous endpoint's name
is replaced by worker 0's pod IP with `is_host` pinned (on one machine every loopback address
is local, so every agent would otherwise think it hosts the c10d store), with quicker
heartbeats than torchrun's defaults so the test fits in its time; and each worker binds its
metrics port on its pod IP (SPARSAM_METRICS_ADDR) rather than on every address.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import CoreV1Api
from tests.conftest import Cluster, Kubectl
from tests.kubelet import log_tail_message
from tests.operator_process import (
    Operator,
    apply,
    eventually,
    get,
    object_events,
    pool,
    trainingjob,
)

from sparsam.api.conditions import rfc3339
from sparsam.demo.hostpods import host_volume
from sparsam.demo.prometheus import FileScrapeJob, running_prometheus
from sparsam.kube.client import api_client
from sparsam_trainer.progress import read_progress

pytestmark = pytest.mark.timeout(420)

CLAIM, MOUNT = "ckpt", "/ckpt"
TORCHRUN = Path(sys.executable).with_name("torchrun")


class HostTrainer:
    """Runs the job's worker pods and compress pod as host processes (see the module doc)."""

    def __init__(self, kubeconfig: Path, namespace: str, job: str, volume: Path, logs: Path):
        self._core = CoreV1Api(api_client(kubeconfig))
        self._namespace, self._job = namespace, job
        self._volume, self._logs = volume, logs
        #: host:port of every worker's metrics endpoint, for Prometheus (file_sd).
        self._targets: list[str] = []
        #: Pod uid -> (pod name, its process); exit codes by pod uid.
        self.processes: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        self.exits: dict[str, int] = {}
        #: Pod name -> its container's terminationMessagePolicy, and when it started.
        self._policies: dict[str, str] = {}
        self._started: dict[str, str] = {}
        self._lost: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> HostTrainer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for _, process in self.processes.values():
            kill_tree(process)

    def kill(self, pod: str) -> None:
        """The pod's node is gone: its processes die at once (SIGKILL, no checkpoint), and no
        kubelet is left to report the exit."""
        for uid, (name, process) in self.processes.items():
            if name == pod:
                self._lost.add(uid)
                kill_tree(process)

    def _loop(self) -> None:
        while not self._stop.wait(0.3):
            try:
                self._sync()
            except Exception as exc:
                print(f"host trainer: {exc}", file=sys.stderr)

    def _sync(self) -> None:
        selector = f"sparsam.dev/job={self._job}"
        listed = self._core.list_namespaced_pod(self._namespace, label_selector=selector)
        pods = {p["metadata"]["uid"]: p for p in listed.to_dict()["items"]}
        host = next(
            (p for p in pods.values() if p["metadata"]["name"] == f"{self._job}-worker-0"), {}
        )
        host_ip = (host.get("status") or {}).get("pod_ip")
        for uid, pod in pods.items():
            status = pod.get("status") or {}
            if pod["metadata"].get("deletion_timestamp") or status.get("phase") != "Running":
                continue
            if uid in self.processes or not status.get("pod_ip") or not host_ip:
                continue
            self._start(uid, pod, host_ip)
        for uid, (name, process) in list(self.processes.items()):
            gone = uid not in pods or pods[uid]["metadata"].get("deletion_timestamp")
            if gone and process.poll() is None:
                kill_tree(process)
            if process.poll() is not None and uid not in self.exits:
                # As the kubelet reports it: a signal N is exit code 128 + N.
                code = process.returncode if process.returncode >= 0 else 128 - process.returncode
                self.exits[uid] = code
                if not gone and uid not in self._lost:
                    self._report_exit(name, code)

    def _start(self, uid: str, pod: dict[str, Any], host_ip: str) -> None:
        name = pod["metadata"]["name"]
        (container,) = pod["spec"]["containers"]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "SPARSAM_TERMINATION_LOG": str(self._logs / f"{name}.termination"),
        }
        for var in container.get("env") or ():
            if var.get("value") is not None:
                env[var["name"]] = self._host_path(var["value"])
        env["SPARSAM_METRICS_ADDR"] = pod["status"]["pod_ip"]
        self._list_target(pod, container)
        self._policies[name] = container.get("termination_message_policy") or "File"
        self._started[name] = rfc3339(datetime.now(UTC))
        command = [
            part for arg in container["command"] for part in self._rewrite(arg, name, host_ip)
        ]
        with (self._logs / f"{name}.log").open("ab") as log:
            self.processes[uid] = (
                name,
                subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                ),
            )

    def _list_target(self, pod: dict[str, Any], container: dict[str, Any]) -> None:
        """Add the pod's `metrics` port to the scrape targets (file_sd; replaced atomically)."""
        ports = [
            p["container_port"] for p in container.get("ports") or () if p["name"] == "metrics"
        ]
        if not ports:
            return
        self._targets.append(f"{pod['status']['pod_ip']}:{ports[0]}")
        listed = self._logs / "targets.json.tmp"
        listed.write_text(json.dumps([{"targets": self._targets, "labels": {}}]))
        listed.replace(self._logs / "targets.json")

    def _rewrite(self, arg: str, pod: str, host_ip: str) -> list[str]:
        """One argument of the pod's command, as the host runs it."""
        if arg == "torchrun":
            return [str(TORCHRUN)]
        if arg == "python":
            return [sys.executable]
        if arg.startswith("--rdzv-endpoint="):
            port = arg.rsplit(":", 1)[1]
            return [f"--rdzv-endpoint={host_ip}:{port}"]
        if arg.startswith("--rdzv-backend="):
            is_host = int(pod.endswith("-worker-0"))
            conf = (
                "join_timeout=120,last_call_timeout=2,keep_alive_interval=1,"
                f"keep_alive_max_attempt=3,is_host={is_host}"
            )
            return [arg, f"--rdzv-conf={conf}", "--monitor-interval=0.5"]
        return [self._host_path(arg)]

    def _host_path(self, value: str) -> str:
        return value.replace(MOUNT, str(self._volume))

    def _report_exit(self, name: str, code: int) -> None:
        """What the kubelet writes when the container exits: the termination message is the
        file's, else with FallbackToLogsOnError and a failure the end of the log."""
        message_file = self._logs / f"{name}.termination"
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": self._started[name],
            "finishedAt": rfc3339(datetime.now(UTC)),
        }
        message = message_file.read_text() if message_file.exists() else ""
        if not message and code != 0 and self._policies[name] == "FallbackToLogsOnError":
            message = log_tail_message((self._logs / f"{name}.log").read_text(errors="replace"))
        if message:
            terminated["message"] = message
        container = "compress" if name.endswith("-compress") else "trainer"
        body = {
            "status": {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": container,
                        "image": "ghcr.io/sparsam/sparsam-trainer:0.1.0",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": terminated},
                    }
                ],
            }
        }
        self._core.patch_namespaced_pod_status(name, self._namespace, body)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self._logs.glob("*.log"))
        )


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process's group and every descendant (torchrun gives each worker a session
    of its own), as a vanished node takes its pod."""
    found: list[int] = []

    def below(pid: int) -> None:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    below(int(child))

    below(process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def host_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """The checkpoint claim's host directory, and where the processes' logs go."""
    volume, logs = tmp_path / "volume", tmp_path / "logs"
    volume.mkdir()
    logs.mkdir()
    return volume, logs


def spot_pool_and_volume(
    kubectl: Kubectl,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
) -> str:
    """A spot GPUNodePool of one GPU per node, so that a node is one worker (deleting one
    preempts exactly that worker), and the checkpoint claim; the pool's name."""
    pool_name = cluster_scoped_name("gpunodepool", "spot")
    spot = pool(pool_name, gpu_type, "spot", maxNodes=3, scaleDownAfter="30s")
    spot["spec"]["nodeTemplate"]["gpusPerNode"] = 1
    apply(kubectl, spot)
    apply(kubectl, *host_volume(namespace, CLAIM, "ReadWriteMany"))
    return pool_name


def training(namespace: str, gpu_type: str, **spec: Any) -> dict[str, Any]:
    """TrainingJob tj: two workers (at least one), a checkpoint every 2 s on the claim, long
    enough (about 1,600 steps) for the second worker to join, one to be lost, and its
    replacement to join, before it ends."""
    return trainingjob(
        "tj",
        namespace,
        gpu_type,
        args=["--task=mnist-cnn", "--epochs=15", "--batch-size=32", "--progress-every=1",
              "--collective-timeout=30"],
        workers={"min": 1, "max": 2},
        checkpoint={"volumeClaim": CLAIM, "path": MOUNT, "interval": "2s"},
        **spec,
    )  # fmt: skip


class Progress:
    """What the trainer's progress file on the claim says."""

    def __init__(self, volume: Path) -> None:
        self._dir = volume / "tj"

    def records(self) -> list[dict[str, Any]]:
        progress = self._dir / "progress.jsonl"
        return read_progress(progress) if progress.exists() else []

    def starts(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["event"] == "start"]

    def resumed_since(self, before: int) -> list[dict[str, Any]]:
        """The rounds started after the first `before`, each asserted to have resumed from a
        checkpoint the run wrote."""
        saved = {r["step"] for r in self.records() if r["event"] == "checkpoint"}
        after = self.starts()[before:]
        assert after and all(s["resumed_from"] in saved for s in after), (after, saved)
        return after

    def two_and_a_checkpoint(self) -> bool:
        steps = [r for r in self.records() if r["event"] == "step" and r["world_size"] == 2]
        saved = list(self._dir.glob("ckpt-*.pt"))
        return bool(steps) and steps[-1]["step"] >= 20 and bool(saved)


def job_status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = get(kubectl, "trainingjob", "tj", "-n", namespace)
    return found.get("status") or {}


def reclaim(trainer: HostTrainer, kubectl: Kubectl, namespace: str, pod: str) -> str:
    """The pod's spot node is reclaimed: its processes die (no checkpoint) and the node is
    deleted. Returns the node's name."""
    node: str = get(kubectl, "pod", pod, "-n", namespace)["spec"]["nodeName"]
    trainer.kill(pod)
    kubectl("delete", "node", node, "--wait=false")
    return node


@contextlib.contextmanager
def host_run(
    cluster: Cluster,
    kubectl: Kubectl,
    namespace: str,
    pool_name: str,
    volume: Path,
    logs: Path,
    *operator_args: str,
) -> Iterator[tuple[Operator, HostTrainer]]:
    """`sparsam run` and the host trainer for job tj. A failure prints what there is to read
    (the processes' logs, the job's status and Events, the pods and nodes); the job and the
    pool are deleted and the operator stopped either way."""
    operator = Operator(cluster.kubeconfig, logs / "operator.log", *operator_args)
    operator.start()
    trainer = HostTrainer(cluster.kubeconfig, namespace, "tj", volume, logs)
    try:
        with trainer:
            yield operator, trainer
    except BaseException:
        print(trainer.logs())
        print(json.dumps(job_status(kubectl, namespace), indent=1))
        print(object_events(kubectl, "tj"))
        print(kubectl("get", "pods,nodes", "-A", "-o", "wide", check=False).stdout)
        raise
    finally:
        kubectl("delete", "trainingjob", "tj", "-n", namespace, "--timeout=60s", check=False)
        kubectl("delete", "gpunodepool", pool_name, "--timeout=60s", check=False)
        operator.stop()


def test_a_job_trains_is_preempted_resumes_compresses_and_deploys(
    cluster: Cluster,
    kubectl: Kubectl,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
    tmp_path: Path,
) -> None:
    pool_name = spot_pool_and_volume(kubectl, namespace, cluster_scoped_name, gpu_type)
    volume, logs = host_dirs(tmp_path)
    job = training(
        namespace,
        gpu_type,
        compression={"quantization": {"mode": "dynamic"}, "maxAccuracyDrop": 0.05},
        deploy={"inferenceService": "digits", "minReplicas": 0, "maxReplicas": 2},
    )
    progress = Progress(volume)

    def status() -> dict[str, Any]:
        return job_status(kubectl, namespace)

    scrape = FileScrapeJob("workers", logs / "targets.json")
    with (
        running_prometheus([scrape], tmp_path / "prometheus") as prometheus,
        host_run(
            cluster, kubectl, namespace, pool_name, volume, logs,
            f"--prometheus-url={prometheus.url}",
        ) as (operator, trainer),
    ):  # fmt: skip
        apply(kubectl, job)

        # 1. Two workers train together and checkpoint.
        eventually(
            "two workers training, a checkpoint written",
            progress.two_and_a_checkpoint,
            operator,
            180,
        )
        # What the workers export reaches status through Prometheus.
        eventually(
            "status.lastCheckpoint from the workers' metrics",
            lambda: (status().get("lastCheckpoint") or {}).get("step", 0) > 0,
            operator,
            60,
        )

        # 2. Worker 1's spot node is reclaimed: its processes die and the node goes.
        before = len(progress.starts())
        node = reclaim(trainer, kubectl, namespace, "tj-worker-1")
        eventually("the preemption counted", lambda: status().get("preemptions") == 1, operator)
        assert status().get("phase") == "Running"

        # 3. A replacement appears on a new node and joins the survivor in the next
        # rendezvous round; the two finish training from a checkpoint, and the model is
        # compressed and deployed.
        def replaced() -> bool:
            pods = get(kubectl, "pods", "-n", namespace, "-l", "sparsam.dev/role=worker")
            return any(
                p["metadata"]["name"] == "tj-worker-1"
                and p["spec"].get("nodeName") not in (None, node)
                for p in pods["items"]
            )

        eventually("a replacement on a new node", replaced, operator)
        eventually(
            "the replacement training with the survivor",
            lambda: any(s["world_size"] == 2 for s in progress.starts()[before:]),
            operator,
            120,
        )
        # The replacement was given an interval computed from the measured write time.
        cadence = status()["checkpointInterval"]
        assert "not yet measured" not in cadence["message"], cadence
        assert 0 < cadence["writeSeconds"] < 30, cadence
        final = eventually(
            "Succeeded",
            lambda: (s := status()).get("phase") == "Succeeded" and s,
            operator,
            120,
        )

    # Two workers trained together; after the loss every round (the survivor's alone, if
    # it closed before the replacement came, then both) resumed from a checkpoint, and the
    # two finished together.
    assert progress.starts()[before - 1]["world_size"] == 2
    after_loss = progress.resumed_since(before)
    assert after_loss[-1]["world_size"] == 2, after_loss
    done = progress.records()[-1]
    assert done["event"] == "done" and done["world_size"] == 2
    assert final["preemptions"] == 1 and final["restarts"] == 0
    assert final["compression"]["accepted"] is True
    assert final["model"] == {"uri": f"pvc://{CLAIM}/tj/compressed/model"}
    assert (volume / "tj" / "compressed" / "model" / "model.ts").is_file()
    served = get(kubectl, "inferenceservice", "digits", "-n", namespace)
    assert served["spec"]["model"]["uri"] == f"pvc://{CLAIM}/tj/compressed/model"
    reasons = [e.split(":")[0] for e in object_events(kubectl, "tj")]
    assert "WorkerPreempted" in reasons and "Deployed" in reasons
    report = json.loads((volume / "tj" / "compressed" / "report.json").read_text())
    assert report["trainingJobStatus"] == final["compression"]
    compress = [uid for uid, (name, _) in trainer.processes.items() if name == "tj-compress"]
    assert [trainer.exits.get(uid) for uid in compress] == [0]


def test_losing_worker_0_and_its_rendezvous_store_fails_nothing_and_the_job_finishes(
    cluster: Cluster,
    kubectl: Kubectl,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
    tmp_path: Path,
) -> None:
    """Worker 0's agent hosts the rendezvous store. Its node goes: worker 1's agent cannot
    reach the store and exits 1 with RendezvousConnectionError, which reaches its pod's status
    as the termination message (FallbackToLogsOnError). The operator counts worker 0's loss
    as a preemption and worker 1's end as neither a preemption nor a failure (backoffLimit is
    0), replaces both, and training resumes from the last checkpoint and finishes."""
    pool_name = spot_pool_and_volume(kubectl, namespace, cluster_scoped_name, gpu_type)
    volume, logs = host_dirs(tmp_path)
    progress = Progress(volume)
    with host_run(cluster, kubectl, namespace, pool_name, volume, logs) as (operator, trainer):
        apply(kubectl, training(namespace, gpu_type, runPolicy={"backoffLimit": 0}))
        eventually(
            "two workers training, a checkpoint written",
            progress.two_and_a_checkpoint,
            operator,
            180,
        )
        before = len(progress.starts())
        reclaim(trainer, kubectl, namespace, "tj-worker-0")
        final = eventually(
            "Succeeded",
            lambda: (s := job_status(kubectl, namespace)).get("phase") == "Succeeded" and s,
            operator,
            240,
        )
        events = object_events(kubectl, "tj")

    survivor = [uid for uid, (name, _) in trainer.processes.items() if name == "tj-worker-1"]
    assert trainer.exits.get(survivor[0]) == 1  # torchrun's agent, on the store's loss
    # Worker 0's loss is the one preemption; worker 1's end is neither that nor a failure.
    assert (final["preemptions"], final["restarts"]) == (1, 0), final
    assert any(e.startswith("WorkerPreempted: tj-worker-0: node") for e in events), events
    assert any(
        e.startswith("RendezvousStoreLost: tj-worker-1: no rendezvous store without worker 0")
        for e in events
    ), events
    # Training went on from a checkpoint (as one or two, as the replacements' rounds fell).
    progress.resumed_since(before)
    assert progress.records()[-1]["event"] == "done"
