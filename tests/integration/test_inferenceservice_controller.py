"""The InferenceService controller end to end, every part real: the dev cluster's apiserver and
scheduler, `sparsam run`, `sparsam activator`, Debian's Prometheus scraping the activator, and
the model server running each replica pod's own command at its pod IP (`HostPods`).

One scenario, in order (a service's life):

1. a new service with min 0 sits at zero replicas, ScaledToZero;
2. a request at zero is held by the activator, which asks for a wake; the operator scales to
   1 at once, the replica's server starts, and the held request is answered; status says
   Active and how long the cold start took;
3. traffic above the per-replica target scales up, as Prometheus sees it;
4. no traffic for scaleToZeroAfter: the Deployment goes to 0 and the phase to ScaledToZero;
5. 300 requests sent at once across a second wake-up: every one answered 200;
6. Prometheus stopped: no scale-down, no scale to zero, MetricsAvailable False.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Cluster, Kubectl
from tests.operator_process import Operator, apply, eventually, get, pool
from tests.trainer.exported_models import IMAGE_LABELS, export_image, image_model, images
from tests.trainer.ports import free_port, wait_for

from sparsam.demo.hostpods import HostPods
from sparsam.demo.prometheus import ScrapeJob, running_prometheus

pytestmark = pytest.mark.timeout(600)

SERVICE = "clf"
#: A short rate window, so that idleness shows within seconds (the default is 1m).
RPS_QUERY = (
    'sum(rate(sparsam_activator_requests_total{namespace="{namespace}",'
    'inference_service="{name}"}[5s]))'
)


@contextmanager
def activator(kubeconfig: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sparsam.cli",
                "activator",
                f"--kubeconfig={kubeconfig}",
                "--host=127.0.0.1",
                f"--port={port}",
                "--hold-timeout=120",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def predict(url: str, timeout: float = 120) -> tuple[int, Any]:
    body = json.dumps({"instances": images(1)}).encode()
    request = urllib.request.Request(  # noqa: S310 - an http URL from our status
        f"{url}/v1/predict", body, {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 - loopback
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def inference_service(namespace: str, gpu_type: str) -> dict[str, Any]:
    return {
        "apiVersion": "sparsam.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": SERVICE, "namespace": namespace},
        "spec": {
            "model": {"uri": f"pvc://models/{SERVICE}"},
            "resources": {"gpus": 1, "gpuType": gpu_type, "cpu": "100m", "memory": "256Mi"},
            "replicas": {"min": 0, "max": 3},
            "scaling": {
                "metric": "rps",
                "target": 4,
                "scaleToZeroAfter": "20s",
                "scaleDownDelay": "5s",
            },
        },
    }


def test_scale_from_zero_up_down_to_zero_and_hold_without_metrics(
    cluster: Cluster,
    kubectl: Kubectl,
    namespace: str,
    gpu_type: str,
    model_claim: str,
    cluster_scoped_name: Callable[[str, str], str],
    tmp_path: Path,
) -> None:
    # A spot pool of this test's GPU type that keeps one node, so a wake waits for the
    # model server only (scaling nodes is the GPUNodePool tests' subject).
    pool_name = cluster_scoped_name("gpunodepool", "spot")
    apply(kubectl, pool(pool_name, gpu_type, "spot", minNodes=1))
    model = export_image(image_model(), tmp_path / "model")
    activator_port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    scrape = ScrapeJob("activator", [f"127.0.0.1:{activator_port}"], metrics_path="/-/metrics")
    with (
        running_prometheus([scrape], tmp_path / "prometheus") as prometheus,
        activator(cluster.kubeconfig, activator_port, logs / "activator.log"),
        HostPods(cluster.kubeconfig, namespace, SERVICE, model, logs) as kubelet,
    ):
        operator = Operator(
            cluster.kubeconfig,
            logs / "operator.log",
            f"--prometheus-url={prometheus.url}",
            f"--activator-url=http://127.0.0.1:{activator_port}",
            f"--rps-query={RPS_QUERY}",
        )
        operator.start()
        try:
            wait_for(lambda: _listening(activator_port), 30, f"the activator on {activator_port}")
            scenario(kubectl, namespace, gpu_type, operator, kubelet, prometheus)
        except BaseException:
            print(kubelet.logs(), (logs / "activator.log").read_text()[-3000:], sep="\n")
            raise
        finally:
            # The pool's finalizer goes only while the operator runs (it drains the nodes).
            for kind, name, where in (
                ("inferenceservice", SERVICE, ["-n", namespace]),
                ("gpunodepool", pool_name, []),
            ):
                kubectl("delete", kind, name, *where, "--timeout=60s", check=False)
            operator.stop()


def scenario(
    kubectl: Kubectl,
    namespace: str,
    gpu_type: str,
    operator: Operator,
    kubelet: HostPods,
    prometheus: Any,
) -> None:
    def status() -> dict[str, Any]:
        found: dict[str, Any] = get(kubectl, "inferenceservice", SERVICE, "-n", namespace)
        return found.get("status") or {}

    def replicas() -> int:
        return int(get(kubectl, "deployment", SERVICE, "-n", namespace)["spec"]["replicas"])

    def condition(type_: str) -> dict[str, Any]:
        return next((c for c in status().get("conditions", []) if c["type"] == type_), {})

    def wait(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
        return eventually(what, check, operator, timeout)

    # 1. At zero, with the url of the activator's route.
    apply(kubectl, inference_service(namespace, gpu_type))
    wait("ScaledToZero", lambda: status().get("phase") == "ScaledToZero")
    # No finalizer (its passes run from a work queue): deleting it never waits for us.
    found = get(kubectl, "inferenceservice", SERVICE, "-n", namespace)
    assert "finalizers" not in found["metadata"]
    assert replicas() == 0
    url = status()["url"]
    assert url.endswith(f"/{namespace}/{SERVICE}")

    # 2. A request at zero: held, woken, answered.
    started = time.monotonic()
    code, reply = predict(url)
    waited = time.monotonic() - started
    assert code == 200, reply
    assert reply["predictions"][0]["label"] in IMAGE_LABELS
    assert kubelet.started, "the request was answered without a replica"
    wait("Active after the wake", lambda: status().get("phase") == "Active")
    # From the first held request to the replica's Ready condition, whose timestamp has
    # whole seconds (on KWOK a pod is Ready before the server behind it listens).
    cold = status().get("lastColdStartSeconds")
    assert cold is not None and 0 <= cold <= waited + 1, (cold, waited)
    events = " ".join(
        e["reason"]
        for e in get(
            kubectl, "events", "-n", namespace, f"--field-selector=involvedObject.name={SERVICE}"
        )["items"]
    )
    assert "Woke" in events and "ScaledUp" in events

    # 3. Traffic above the target (4 rps per replica) scales up.
    with ThreadPoolExecutor(4) as pool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and replicas() < 2:
            results = list(pool.map(lambda _: predict(url)[0], range(12)))
            assert set(results) == {200}
    assert replicas() >= 2, status()

    # 4. Idle: down to zero after scaleToZeroAfter (20s) and the 5s rate window.
    wait("ScaledToZero after idling", lambda: status().get("phase") == "ScaledToZero", 120)
    assert replicas() == 0
    wait("every replica process stopped", lambda: not kubelet.processes, 60)

    # 5. A burst across the second wake-up: none lost.
    with ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(lambda _: predict(url)[0], range(300)))
    assert codes.count(200) == 300, {c: codes.count(c) for c in set(codes)}
    wait("Active again", lambda: status().get("phase") == "Active")
    running = replicas()
    assert running >= 1

    # 6. Prometheus gone: replicas held past scaleDownDelay and scaleToZeroAfter.
    prometheus.process.terminate()
    prometheus.process.wait(15)
    wait(
        "MetricsAvailable False",
        lambda: condition("MetricsAvailable").get("reason") == "MetricsUnavailable",
    )
    time.sleep(30)
    assert replicas() == running
    assert status().get("phase") == "Active"
    assert "unreachable" in condition("MetricsAvailable")["message"]


def _listening(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthz", timeout=2):
            return True
    except OSError:
        return False
