"""Run what model-server pods would run, as host processes at their pod IPs.

KWOK marks pods Running and Ready without running anything. For the demo and the
InferenceService tests this stands in for the kubelet: for each of a service's pods that is
Running with a pod IP, it starts the pod's own container command (``python -m sparsam_trainer
serve --model-dir /models/... --port 8080``) as a host process bound to that IP (the dev
cluster's pod IPs are loopback addresses), with the model directory mapped to one on the host;
when the pod goes (deleted, or terminating) the process gets SIGTERM, as a container would.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from kubernetes.client import CoreV1Api

from sparsam.api import constants as c
from sparsam.kube.client import api_client
from sparsam.kube.inferenceservice import MODEL_ROOT

logger = logging.getLogger(__name__)


class HostPods:
    """Keeps one host process per running replica pod of an InferenceService (a context
    manager: a background thread syncs every 0.2 s; leaving stops every process)."""

    def __init__(
        self, kubeconfig: Path, namespace: str, service: str, model_dir: Path, log_dir: Path
    ) -> None:
        self._core = CoreV1Api(api_client(kubeconfig))
        self._namespace = namespace
        self._selector = f"{c.LABEL_INFERENCE_SERVICE}={service}"
        self._model_dir = model_dir
        self._log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        #: Every pod name a process was started for, in order.
        self.started: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> HostPods:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for process in self.processes.values():
            _terminate(process)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.sync()
            except Exception as exc:
                logger.warning("host pods: %s", exc)

    def sync(self) -> None:
        listed = self._core.list_namespaced_pod(self._namespace, label_selector=self._selector)
        pods: list[dict[str, Any]] = listed.to_dict()["items"]
        alive: set[str] = set()
        for pod in pods:
            name, status = pod["metadata"]["name"], pod.get("status") or {}
            ip = status.get("pod_ip")
            if pod["metadata"].get("deletion_timestamp") or status.get("phase") != "Running":
                continue
            if not ip:
                continue
            alive.add(name)
            if name not in self.processes:
                self._start(name, ip, list(pod["spec"]["containers"][0]["command"]))
        for name in list(self.processes):
            if name not in alive:
                _terminate(self.processes.pop(name))

    def _start(self, name: str, ip: str, command: list[str]) -> None:
        args = [self._host_path(arg) for arg in command[1:]]  # the pod's own, minus "python"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        with (self._log_dir / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, *args, "--host", ip, "--threads", "1"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.started.append(name)

    def _host_path(self, arg: str) -> str:
        if arg.startswith(MODEL_ROOT + "/") or arg == MODEL_ROOT:
            return str(self._model_dir)
        return arg

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-2000:]}"
            for path in sorted(self._log_dir.glob("*.log"))
        )


def host_volume(
    namespace: str, claim: str = "models", access: str = "ReadOnlyMany"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A PersistentVolumeClaim `claim` bound to a volume of its own (cluster-scoped, named
    after the claim and the namespace), e.g. the claim `models` that replicas mount
    (`pvc://models/...`). Nothing mounts it: KWOK runs no containers, and `HostPods` maps
    /models to a host directory."""
    volume = f"{claim}-{namespace}"[:63].rstrip("-")
    return (
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": [access],
                "storageClassName": "",
                "hostPath": {"path": f"/srv/{claim}"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": [access],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )


def _terminate(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
