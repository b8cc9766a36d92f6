"""The activator against the dev cluster: it finds a KWOK pod labelled for an InferenceService
and forwards to the process listening at the pod's IP (KWOK hands out 127.1.x.y addresses that a
host process can bind), and for a service with no ready pod it holds the request, writes the
wake annotation on the InferenceService, and answers once a pod is ready and listening."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tests.activator_process import ActivatorProcess, activator_process
from tests.conftest import Cluster, Kubectl
from tests.operator_process import get
from tests.trainer.ports import wait_for

from sparsam.api import constants as c

WAKE_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture(scope="module")
def front(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActivatorProcess]:
    log = tmp_path_factory.mktemp("activator") / "activator.log"
    with activator_process(
        log,
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--hold-timeout",
        "60",
        ready_path="/-/readyz",
    ) as process:
        yield process


def create_inference_service(kubectl: Kubectl, namespace: str, name: str) -> None:
    manifest = {
        "apiVersion": c.API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"uri": f"pvc://models/{name}"}, "replicas": {"min": 0, "max": 1}},
    }
    kubectl("apply", "-f", "-", input=json.dumps(manifest))


def create_replica(kubectl: Kubectl, namespace: str, service: str, name: str) -> str:
    """A pod as the operator would make one for `service` (label, port named http); KWOK runs
    it. Its IP, once Ready."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {c.LABEL_INFERENCE_SERVICE: service},
        },
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "registry.invalid/sparsam-model-server",
                    "ports": [{"name": "http", "containerPort": 8080}],
                }
            ],
            # Every dev-cluster node is a tainted KWOK GPU node.
            "tolerations": [{"operator": "Exists"}],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    kubectl("wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace, "--timeout=60s")
    ip: str = get(kubectl, "pod", name, "-n", namespace)["status"]["podIP"]
    assert ip.startswith("127."), f"expected a loopback pod IP from KWOK, got {ip}"
    return ip


@contextmanager
def replica_process(ip: str, name: str) -> Iterator[list[str]]:
    """What would run in the pod: an HTTP server on its IP and port, that says who it is and
    what it was asked. Yields the paths it served."""
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            served.append(self.path)
            payload = json.dumps(
                {"pod": name, "method": self.command, "path": self.path, "body": body.decode()}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((ip, 8080), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


def in_background(call: Callable[[], Any]) -> Callable[[], Any]:
    """Run `call` in a thread; the returned function joins it and returns (or raises) its
    result."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> Any:
        thread.join(90)
        assert not thread.is_alive(), "the request did not finish"
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return result


def test_forwards_to_the_ready_pod(
    front: ActivatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    create_inference_service(kubectl, namespace, "echo")
    ip = create_replica(kubectl, namespace, "echo", "echo-0")
    with replica_process(ip, "echo-0") as served:
        status, body = front.get(f"/{namespace}/echo/v1/models?verbose=1", timeout=60)
        assert status == 200, body
        assert json.loads(body) == {
            "pod": "echo-0",
            "method": "GET",
            "path": "/v1/models?verbose=1",
            "body": "",
        }
        assert served == ["/v1/models?verbose=1"]
    labels = f'{{inference_service="echo",namespace="{namespace}"}}'
    assert front.metric(f"sparsam_activator_requests_total{labels}") == 1


def test_holds_wakes_and_answers_once_a_replica_listens(
    front: ActivatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    create_inference_service(kubectl, namespace, "cold")
    labels = f'{{inference_service="cold",namespace="{namespace}"}}'
    # Known to the activator (0, present) before any traffic.
    wait_for(
        lambda: front.metric(f"sparsam_activator_requests_total{labels}") == 0,
        30,
        "the activator knows the new InferenceService",
    )
    asked = datetime.now(UTC)
    answer = in_background(lambda: front.get(f"/{namespace}/cold/v1/predict", timeout=90))

    def wake_requested() -> str | None:
        annotations = (
            get(kubectl, "inferenceservice", "cold", "-n", namespace)["metadata"].get("annotations")
            or {}
        )
        value: str | None = annotations.get(c.ANNOTATION_WAKE_REQUESTED)
        return value

    wait_for(lambda: wake_requested() is not None, 30, "the wake annotation is set")
    value = wake_requested()
    assert value is not None and WAKE_FORMAT.fullmatch(value), value
    when = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert asked - timedelta(seconds=5) <= when <= datetime.now(UTC) + timedelta(seconds=5)
    assert front.metric(f"sparsam_activator_held_requests{labels}") == 1

    # The operator would now scale up; here the test makes the replica itself. Its pod is Ready
    # (KWOK) before its process listens: the activator keeps the request until it does.
    ip = create_replica(kubectl, namespace, "cold", "cold-0")
    with replica_process(ip, "cold-0") as served:
        status, body = answer()
        assert status == 200, body
        assert json.loads(body)["pod"] == "cold-0"
        assert served == ["/v1/predict"]
    assert front.metric(f"sparsam_activator_hold_seconds_count{labels}") == 1
    assert front.metric(f"sparsam_activator_held_requests{labels}") == 0


def test_unknown_service_is_404(front: ActivatorProcess, namespace: str) -> None:
    status, body = front.get(f"/{namespace}/nobody/v1/predict")
    assert status == 404
    assert json.loads(body) == {"error": f"InferenceService {namespace}/nobody not found"}


def test_log_has_no_traceback(front: ActivatorProcess) -> None:
    assert "Traceback" not in front.log()
