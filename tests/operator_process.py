"""`sparsam run` as its own process for integration tests, and the polling helpers they share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from tests.conftest import Kubectl


class Operator:
    """`sparsam run` against the test cluster, restartable, its log kept for failures."""

    def __init__(
        self, kubeconfig: Path, log: Path, *args: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        #: More `sparsam run` flags.
        self.args = args
        #: More environment variables (e.g. SPARSAM_FAILPOINTS), over this process's own.
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sparsam.cli",
                    "run",
                    f"--kubeconfig={self.kubeconfig}",
                    "--capacity-interval=1s",
                    "--training-interval=1s",
                    "--policy-interval=1s",
                    "--serving-interval=1s",
                    *self.args,
                    "--offering-ttl=10m",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )

    def kill(self) -> None:
        """Stop it the hard way, as a crash or an OOM kill would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


def get(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def eventually(
    what: str, check: Callable[[], Any], operator: Operator | None, timeout: float = 90
) -> Any:
    """Poll `check` until it returns something truthy; fail with the operator's log (when one
    runs) if not."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            log = f"\n--- operator log ---\n{operator.tail()}" if operator else ""
            pytest.fail(f"timed out waiting for {what}{log}")
        time.sleep(0.5)


def apply(kubectl: Kubectl, *objects: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


def pool(name: str, gpu_type: str, capacity: str, **spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", {})
    return {
        "apiVersion": "sparsam.dev/v1alpha1",
        "kind": "GPUNodePool",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "provider": {"kwok": {}},
            "nodeTemplate": {
                "gpuType": gpu_type,
                "gpusPerNode": 4,
                "cpu": "48",
                "memory": "192Gi",
            },
            "capacityType": capacity,
            "pricePerHour": 2.0 if capacity == "spot" else 6.0,
            "maxNodes": 3,
            "scaleDownAfter": "5s",
            **spec,
        },
    }


def pool_nodes(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get(kubectl, "nodes", "-l", f"sparsam.dev/pool={name}")["items"]
    return items


def running_pods(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """Running pods of the namespace that are not on their way out: name -> node."""
    pods = get(kubectl, "pods", "-n", namespace)["items"]
    return {
        p["metadata"]["name"]: p["spec"]["nodeName"]
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }


def object_events(kubectl: Kubectl, name: str) -> list[str]:
    events = get(kubectl, "events", "-A", "--field-selector", f"involvedObject.name={name}")[
        "items"
    ]
    return [f"{e['reason']}: {e['message']}" for e in events]


def trainingjob(name: str, namespace: str, gpu_type: str, **spec: Any) -> dict[str, Any]:
    """A TrainingJob of two 1-GPU workers (at least one) on `gpu_type`; `spec` overrides."""
    return {
        "apiVersion": "sparsam.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": "vision"}},
        "spec": {
            "image": "ghcr.io/sparsam/sparsam-trainer:0.1.0",
            "args": ["--task", "mnist-cnn"],
            "workers": {"min": 1, "max": 2},
            "resources": {"gpus": 1, "gpuType": gpu_type, "cpu": "1", "memory": "1Gi"},
            **spec,
        },
    }
