"""sparsam's own pod specs on real kubelets: the manifests the controllers build
(`kube.trainingjob`, `kube.inferenceservice`), for TrainingJob and InferenceService objects the
real apiserver admitted, run in the trainer image on two real nodes of one dev cluster.

What a test changes in a built manifest is said where it changes it, and why. No operator runs
here: the objects only give the builders their input (and the pods real owners)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from kubernetes import client, watch

from sparsam.api import constants as c
from sparsam.api.inferenceservice import InferenceService
from sparsam.api.trainingjob import TrainingJob
from sparsam.decisions.training import outcome
from sparsam.devcluster import images
from sparsam.devcluster.bootstrap import bring_up
from sparsam.devcluster.cluster import DevCluster
from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.tools import Binaries
from sparsam.kube.client import api_client
from sparsam.kube.inferenceservice import HTTP_PORT, deployment_manifests
from sparsam.kube.observe import worker_from_body
from sparsam.kube.pods import DEFAULT_UID
from sparsam.kube.trainingjob import (
    TERMINATION_GRACE_SECONDS,
    compress_manifest,
    service_manifest,
    worker_manifest,
)

IMAGE = "trainer-cpu"
NAMESPACE = "proof"
CLAIM = "checkpoints"
#: A class no provisioner serves, so the claim binds to the test's static volume only.
STORAGE_CLASS = "sparsam-proof-static"
#: A small mnist-cnn run: 8 steps of the global batch of 64, validation on 128 images.
SMALL_RUN = ("--task", "mnist-cnn", "--epochs", "1", "--max-train-samples", "512",
             "--max-eval-samples", "128", "--progress-every", "1")  # fmt: skip
#: Kept under the nodes' allocatable (the CRD's defaults, 2 CPUs and 8Gi, are a real worker's)
#: so that several pods fit the two nodes of this 2-core machine at once.
SMALL_RESOURCES = {"gpus": 0, "cpu": "100m", "memory": "512Mi"}


@dataclass(frozen=True)
class Cluster:
    dev: DevCluster
    binaries: Binaries
    image: images.ImageArchive
    #: The static volume's folder on this machine (both nodes are this machine).
    volume: Path
    core: client.CoreV1Api

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        done = subprocess.run(
            [str(self.binaries["kubectl"]), f"--kubeconfig={self.dev.kubeconfig}", "-n",
             NAMESPACE, *args],
            input=input, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def apply(self, *manifests: dict[str, Any]) -> list[dict[str, Any]]:
        out = self.kubectl("apply", "-o", "json", "-f", "-", input=yaml.safe_dump_all(manifests))
        found = json.loads(out)
        items: list[dict[str, Any]] = found["items"] if found["kind"] == "List" else [found]
        return items

    def pod(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.kubectl("get", "pod", name, "-o", "json"))
        return found

    def wait_phase(self, name: str, phase: str, timeout: int = 120) -> dict[str, Any]:
        self.kubectl(
            "wait", f"--for=jsonpath={{.status.phase}}={phase}", f"--timeout={timeout}s",
            f"pod/{name}",
        )  # fmt: skip
        return self.pod(name)

    def logs(self, name: str) -> str:
        return self.kubectl("logs", name, check=False)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    dev = DevCluster(f"pytest-pods-{os.getpid()}", root=tmp_path_factory.mktemp("pods"))
    try:
        image = images.ensure_image(IMAGE)
        binaries = bring_up(dev, real_nodes=2, node_images=[IMAGE])
    except DevClusterError as exc:
        dev.down()
        pytest.fail(f"the dev cluster with real nodes did not come up: {exc}", pytrace=False)
    # The pods run as DEFAULT_UID. A hostPath volume gets no fsGroup ownership change (the
    # kubelet applies fsGroup only to volumes that support it), so the folder is chowned here,
    # as an admin would prepare a static volume. The container sees it through a bind mount,
    # so the mode of tmp's parents on the host does not matter.
    volume = tmp_path_factory.mktemp("volume")
    os.chown(volume, DEFAULT_UID, DEFAULT_UID)
    api = api_client(dev.kubeconfig)
    cluster = Cluster(dev, binaries, image, volume, client.CoreV1Api(api))
    try:
        cluster.kubectl("create", "namespace", NAMESPACE)
        # Pod Security "restricted" enforced by the apiserver: every pod below is admitted
        # only if the builders' securityContext meets it.
        cluster.kubectl(
            "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted"
        )
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"proof-{os.getpid()}"},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": STORAGE_CLASS,
                    "hostPath": {"path": str(volume), "type": "Directory"},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": CLAIM, "namespace": NAMESPACE},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": STORAGE_CLASS,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        cluster.kubectl(
            "wait", "--for=jsonpath={.status.phase}=Bound", "--timeout=60s", f"pvc/{CLAIM}"
        )
        yield cluster
    finally:
        api.close()  # type: ignore[no-untyped-call]
        dev.down()


def _job(real: Cluster, name: str, args: tuple[str, ...], workers: int = 1) -> TrainingJob:
    """A TrainingJob as the apiserver admitted it (defaults, a uid), parsed as the operator
    parses it, with its rendezvous Service created as the operator creates it."""
    (body,) = real.apply(
        {
            "apiVersion": "sparsam.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                # Not the CRD's default image: the one the nodes imported. Its tag is not
                # `latest`, so the pods' imagePullPolicy defaults to IfNotPresent and the
                # builders need not set one.
                "image": real.image.ref,
                "args": list(args),
                "workers": {"min": workers, "max": workers},
                "resources": SMALL_RESOURCES,
                "checkpoint": {"volumeClaim": CLAIM},
            },
        }
    )
    job = TrainingJob.from_body(body)
    real.apply(service_manifest(job))
    return job


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = pod["status"]["containerStatuses"][0]["state"]
    return state.get("terminated") or {}


def _progress(folder: Path) -> list[dict[str, Any]]:
    path = folder / "progress.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def _checkpoint_step(path: Path) -> int:
    step: int = torch.load(path, weights_only=True)["step"]
    return step


def test_a_worker_trains_to_completion_and_checkpoints_to_the_volume(real: Cluster) -> None:
    job = _job(real, "mnist", SMALL_RUN)
    # The interval the operator passes: every 4 steps, so the run writes checkpoints mid-way.
    pod = worker_manifest(job, 0, checkpoint_interval="4steps")
    started = time.monotonic()
    real.apply(pod)
    done = real.wait_phase("mnist-worker-0", "Succeeded", timeout=240)
    elapsed = time.monotonic() - started
    print(f"\nmnist-cnn worker, create -> Succeeded: {elapsed:.1f} s")

    folder = real.volume / "mnist"  # SPARSAM_CHECKPOINT_DIR: <path>/<job>
    assert (folder / "model.pt").is_file(), real.logs("mnist-worker-0")
    checkpoints = sorted(folder.glob("ckpt-*.pt"))
    assert checkpoints, list(folder.iterdir())
    assert all(p.stat().st_uid == DEFAULT_UID for p in [folder, *checkpoints])
    last = max(_checkpoint_step(p) for p in checkpoints)
    events = _progress(folder)
    assert events[-1]["event"] == "done" and events[-1]["step"] >= last > 0
    run = _time(events[-1]["timestamp"]) - _time(events[0]["timestamp"])
    print(f"training, the trainer's start -> done records: {run:.1f} s")
    # The pod's securityContext is the builder's, unchanged (the apiserver enforced
    # "restricted" on the namespace, and the kubelet ran it so).
    assert done["spec"]["securityContext"] == pod["spec"]["securityContext"]
    assert done["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    # What the operator reads back: a success, and no termination message (the trainer writes
    # none; FallbackToLogsOnError fills one in only for a failure).
    terminated = _terminated(done)
    assert terminated["exitCode"] == 0 and not terminated.get("message")
    assert outcome(worker_from_body(done, None, gone_node=False)) == "succeeded"


WRITES = """\
import errno, os, sys
def attempt(path):
    try:
        with open(path, "w") as out:
            out.write("x")
        os.unlink(path)
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]
for path in sys.argv[1:]:
    print(path, attempt(path))
mounts = ("/proc", "/sys", "/dev", "/tmp", "/checkpoints")
writable = []
for root, dirs, _ in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in mounts]
    if os.access(root, os.W_OK):
        writable.append(root)
print("writable", ",".join(sorted(writable)) or "-")
"""


def test_under_the_restricted_context_a_worker_writes_only_to_its_volumes(real: Cluster) -> None:
    job = _job(real, "writes", SMALL_RUN)
    pod = worker_manifest(job, 0)
    # The same pod with a probe for a command: it tries each path, then lists every folder of
    # the image it could write to.
    targets = ["/probe", "/usr/probe", "/usr/lib/probe", "/tmp/probe", "/dev/shm/probe",
               "/checkpoints/probe"]  # fmt: skip
    container = pod["spec"]["containers"][0]
    container["command"] = ["python", "-c", WRITES, *targets]
    real.apply(pod)
    real.wait_phase("writes-worker-0", "Succeeded", timeout=180)
    lines = dict(line.split(" ", 1) for line in real.logs("writes-worker-0").splitlines())
    assert {p: lines[p] for p in targets} == {
        # The image's own files are root's: uid 65532 is refused with EACCES. Not EROFS: the
        # builder does not set readOnlyRootFilesystem, so the root filesystem is writable to
        # whoever owns a path there (a gap: RESTRICTED_CONTAINER could set it; the trainer
        # writes only to /tmp, /dev/shm and the checkpoint volume, which are all mounts).
        "/probe": "EACCES",
        "/usr/probe": "EACCES",
        "/usr/lib/probe": "EACCES",
        "/tmp/probe": "ok",  # the pod's emptyDir
        "/dev/shm/probe": "ok",  # the pod's memory emptyDir
        "/checkpoints/probe": "ok",  # the claim
    }
    assert "readOnlyRootFilesystem" not in container["securityContext"]
    # So two folders of the image are writable to the trainer's user: its home and /var/tmp
    # (the image makes them so; they live in the container's writable layer on the node).
    # This is the gap's extent, not something the trainer uses.
    assert lines["writable"] == "/home/nonroot,/var/tmp"

    # The builder could close it: the same worker with readOnlyRootFilesystem trains to the
    # end, because everything it writes goes to its mounts.
    job = _job(real, "sealed", SMALL_RUN)
    sealed = worker_manifest(job, 0)
    sealed["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = True
    real.apply(sealed)
    done = real.wait_phase("sealed-worker-0", "Succeeded", timeout=240)
    assert _terminated(done)["exitCode"] == 0, real.logs("sealed-worker-0")
    assert (real.volume / "sealed" / "model.pt").is_file()


def test_two_workers_on_two_nodes_rendezvous_by_worker_0s_headless_name(real: Cluster) -> None:
    job = _job(real, "pair", SMALL_RUN, workers=2)
    pods = [worker_manifest(job, i, checkpoint_interval="4steps") for i in range(2)]
    for index, pod in enumerate(pods):
        # One worker on each node, to prove the rendezvous crosses nodes. The builder has no
        # spreading (no anti-affinity or topology spread between a job's workers), so the
        # scheduler may put both on one node; a real cluster's one GPU per worker would
        # spread them anyway.
        pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": f"real-{index}"}
    real.apply(*pods)
    for pod in pods:
        name = pod["metadata"]["name"]
        done = real.wait_phase(name, "Succeeded", timeout=240)
        assert _terminated(done)["exitCode"] == 0, real.logs(name)
    endpoint = next(a for a in pods[1]["spec"]["containers"][0]["command"] if "rdzv-end" in a)
    assert endpoint == f"--rdzv-endpoint=pair-worker-0.pair.{NAMESPACE}.svc:29400"
    assert {real.pod(p["metadata"]["name"])["spec"]["nodeName"] for p in pods} == {
        "real-0",
        "real-1",
    }
    folder = real.volume / "pair"
    assert (folder / "model.pt").is_file()
    events = _progress(folder)
    assert {e["world_size"] for e in events if e["event"] == "step"} == {2}
    assert events[-1]["event"] == "done"


def test_the_model_server_is_ready_and_answers_at_its_pod_ip(real: Cluster) -> None:
    # The model of the first test, exported by the operator's own compress pod (no
    # spec.compression: export only, into <job>/exported/model).
    if not (real.volume / "mnist" / "model.pt").is_file():
        pytest.skip("needs the model of test_a_worker_trains_to_completion...")
    job = TrainingJob.from_body(
        json.loads(real.kubectl("get", "trainingjob", "mnist", "-o", "json"))
    )
    compress = compress_manifest(job)
    real.apply(compress)
    done = real.wait_phase("mnist-compress", "Succeeded", timeout=240)
    assert _terminated(done)["exitCode"] == 0, real.logs("mnist-compress")
    assert (real.volume / "mnist" / "exported" / "model" / "manifest.json").is_file()

    (body,) = real.apply(
        {
            "apiVersion": "sparsam.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "digits", "namespace": NAMESPACE},
            "spec": {
                "model": {"uri": f"pvc://{CLAIM}/mnist/exported/model"},
                "image": real.image.ref,
                "resources": SMALL_RESOURCES,
                "replicas": {"min": 1, "max": 1},
            },
        }
    )
    service = InferenceService.from_body(body)
    deployment = deployment_manifests(service, 0, 1)[0]
    assert deployment["spec"]["replicas"] == 1
    real.apply(deployment)  # the real Deployment controller makes its pod
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
    )
    real.kubectl("wait", "--for=condition=Ready", "--timeout=180s", "pod", "-l", selector)
    (pod,) = json.loads(real.kubectl("get", "pod", "-l", selector, "-o", "json"))["items"]
    address = pod["status"]["podIP"]  # on the dev cluster's bridge: this machine only
    request = urllib.request.Request(
        f"http://{address}:{HTTP_PORT}/v1/predict",
        data=json.dumps({"instances": [[0] * 784, [255] * 784]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http, pod IP
        answer = json.loads(response.read())
    assert answer["model"] == "mnist-cnn"
    assert len(answer["predictions"]) == 2
    assert all(len(p["scores"]) == 10 for p in answer["predictions"])


def test_a_deleted_worker_checkpoints_and_counts_as_a_preemption(real: Cluster) -> None:
    # A run long enough to be stopped: 3,500 images a epoch, 20 epochs, in batches of 16.
    args = ("--task", "mnist-cnn", "--epochs", "20", "--batch-size", "16",
            "--max-eval-samples", "64", "--progress-every", "1")  # fmt: skip
    job = _job(real, "stop", args)
    pod = worker_manifest(job, 0)  # checkpoints every 10 min: only SIGTERM writes one here
    assert pod["spec"]["terminationGracePeriodSeconds"] == TERMINATION_GRACE_SECONDS
    real.apply(pod)
    folder = real.volume / "stop"
    deadline = time.monotonic() + 180
    while not any(e["event"] == "step" and e["step"] >= 5 for e in _progress(folder)):
        assert time.monotonic() < deadline, real.logs("stop-worker-0")
        time.sleep(1)

    seen: list[dict[str, Any]] = []
    stream = watch.Watch()  # type: ignore[no-untyped-call]

    def follow() -> None:
        for event in stream.stream(  # type: ignore[no-untyped-call]
            real.core.list_namespaced_pod, NAMESPACE,
            field_selector="metadata.name=stop-worker-0", timeout_seconds=TERMINATION_GRACE_SECONDS,
            _preload_content=False,
        ):  # fmt: skip
            seen.append(event["raw_object"])
            if event["type"] == "DELETED":
                return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(0.5)
    deleted = time.monotonic()
    real.kubectl("delete", "pod", "stop-worker-0", "--wait=false")
    follower.join(TERMINATION_GRACE_SECONDS + 10)
    stream.stop()  # type: ignore[no-untyped-call]
    assert not follower.is_alive()
    took = time.monotonic() - deleted
    print(f"\ndeleted -> gone: {took:.1f} s")
    assert took < TERMINATION_GRACE_SECONDS

    ended = [b for b in seen if b.get("status", {}).get("containerStatuses") and _terminated(b)]
    assert ended, seen
    last = ended[-1]
    terminated = _terminated(last)
    # The trainer (torchrun's worker) checkpoints and exits 75, but the container's process is
    # torchrun: its agent turns the SIGTERM into a SignalException after it has stopped its
    # workers, and exits 1. The log's last line (the termination message) names the signal.
    assert terminated["exitCode"] == 1
    assert "SignalException: Process 1 got signal: 15" in terminated["message"]
    assert outcome(worker_from_body(last, None, gone_node=False)) == "preempted"
    newest = max(_checkpoint_step(p) for p in folder.glob("ckpt-*.pt"))
    preempted = [e for e in _progress(folder) if e["event"] == "preempted"]
    assert preempted and preempted[-1]["step"] == newest >= 5


def test_worker_pods_start_on_the_real_nodes(real: Cluster) -> None:
    """Create -> Running of 10 trainer-image workers (5 a node), the image already imported."""
    job = _job(real, "start", SMALL_RUN)
    pods = []
    for index in range(10):
        pod = worker_manifest(job, index)
        # Only the start is measured: the container sleeps instead of training.
        pod["spec"]["containers"][0]["command"] = ["python", "-c", "import time; time.sleep(600)"]
        pod["spec"]["terminationGracePeriodSeconds"] = 1
        pods.append(pod)
    real.apply(*pods)
    real.kubectl(
        "wait", "--for=jsonpath={.status.phase}=Running", "--timeout=180s", "pod",
        "-l", f"{c.LABEL_JOB}=start",
    )  # fmt: skip
    found = json.loads(real.kubectl("get", "pod", "-l", f"{c.LABEL_JOB}=start", "-o", "json"))
    seconds = []
    for pod in found["items"]:
        created = _time(pod["metadata"]["creationTimestamp"])
        running = _time(pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"])
        seconds.append(running - created)
    seconds.sort()
    p50 = statistics.median(seconds)
    print(f"\ncreate -> Running of 10 workers: p50 {p50:.0f} s, p99 {seconds[-1]:.0f} s")
    assert len(seconds) == 10
    real.kubectl("delete", "pod", "-l", f"{c.LABEL_JOB}=start", "--wait=false")


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
