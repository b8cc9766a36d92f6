"""The running part of `sparsam demo`: sparsam at work on the dev cluster.

After the demo has applied examples/, this starts the operator, the activator and a real
Prometheus on the host, and walks through:

1. the example TrainingJob placed by the operator (workers on spot GPU nodes, phase Running);
2. a small model trained (mnist-cnn, 2 epochs) and compressed (int8, within a 2-point accuracy
   budget) by the trainer, as a TrainingJob's pods would;
3. that model served by an InferenceService with `replicas.min: 0`: it sits at zero, a request
   through the activator wakes it (the model server runs at the replica pod's IP, see
   `hostpods`), it answers, goes back to zero after `scaleToZeroAfter` without traffic, and a
   second request wakes it again.

Everything it starts stops at the end; the cluster and its objects stay. It needs the trainer
extra (torch) and a `prometheus` binary (Debian's package); without them it says so and skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from sparsam.demo.hostpods import HostPods, host_volume
from sparsam.demo.prometheus import PrometheusError, ScrapeJob, find_binary, running_prometheus
from sparsam.devcluster.cluster import free_port

SERVICE = "digits"
#: The checkpoint claim of examples/trainingjob.yaml.
TRAINING_CLAIM = "bbc-minilm-checkpoints"
Say = Callable[[str], None]
Kubectl = Callable[..., str]


def prerequisites() -> str | None:
    """Why the walkthrough cannot run here, or None."""
    try:
        import torch  # noqa: F401 - only its presence is checked
    except ImportError:
        return "the trainer extra is not installed (pip install -e '.[trainer]')"
    try:
        find_binary()
    except PrometheusError as error:
        return str(error)
    return None


def walk(kubeconfig: Path, kubectl: Kubectl, namespace: str, work: Path, say: Say) -> None:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    model = _compressed_model(work, say)
    activator_port = free_port()
    scrape = ScrapeJob("activator", [f"127.0.0.1:{activator_port}"], metrics_path="/-/metrics")
    with ExitStack() as stack:
        prometheus = stack.enter_context(running_prometheus([scrape], work / "prometheus"))
        stack.enter_context(
            _process(
                ["activator", f"--kubeconfig={kubeconfig}", "--host=127.0.0.1",
                 f"--port={activator_port}"],
                logs / "activator.log",
            )
        )  # fmt: skip
        stack.enter_context(
            _process(
                ["run", f"--kubeconfig={kubeconfig}", f"--prometheus-url={prometheus.url}",
                 f"--activator-url=http://127.0.0.1:{activator_port}"],
                logs / "operator.log",
            )
        )  # fmt: skip
        say(f"started the operator, the activator and Prometheus; their logs are in {logs}")
        # The example job's checkpoint volume (in a real cluster, a ReadWriteMany claim).
        checkpoints = host_volume(namespace, TRAINING_CLAIM, "ReadWriteMany")
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(checkpoints))
        _training(kubectl, namespace, say)
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(host_volume(namespace)))
        kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_service()))
        stack.enter_context(HostPods(kubeconfig, namespace, SERVICE, model, logs))
        try:
            _serving(kubectl, namespace, say)
        finally:
            # Deleted while the operator runs, so Kopf releases its finalizer.
            kubectl("delete", "inferenceservice", SERVICE, "-n", namespace, "--timeout=60s")
    say("stopped the operator, the activator and Prometheus; the cluster keeps running")


def _compressed_model(work: Path, say: Say) -> Path:
    trained, compressed = work / "trained", work / "compressed"
    say("training mnist-cnn for 2 epochs (python -m sparsam_trainer train), about 10 s")
    _trainer(["train", "--task=mnist-cnn", "--epochs=2", f"--output-dir={trained}"], work)
    spec = work / "compression.json"
    spec.write_text(json.dumps({"quantization": {"mode": "dynamic"}, "maxAccuracyDrop": 0.02}))
    say("compressing it: int8 weights, at most 2 points of accuracy lost")
    _trainer(
        ["compress", f"--model={trained / 'model.pt'}", f"--spec={spec}",
         f"--output-dir={compressed}", "--threads=1", "--latency-runs=5"],
        work,
    )  # fmt: skip
    report = json.loads((compressed / "report.json").read_text())["trainingJobStatus"]
    size, accuracy = report["sizeBytes"], report["accuracy"]
    say(
        f"compressed: {size['before']:,} -> {size['after']:,} bytes, accuracy"
        f" {accuracy['before']:.3f} -> {accuracy['after']:.3f}, accepted: {report['accepted']}"
    )
    return compressed / "model"


def _trainer(args: list[str], work: Path) -> None:
    log = work / "logs" / f"{args[0]}.log"
    with log.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "sparsam_trainer", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
            check=False,
            timeout=600,
        )
    if done.returncode != 0:
        raise RuntimeError(f"sparsam_trainer {args[0]} exited {done.returncode}; see {log}")


def _training(kubectl: Kubectl, namespace: str, say: Say) -> None:
    say("the example TrainingJob, as the operator places its workers (Ctrl-C stops the demo):")
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        table = kubectl("get", "trainingjobs", "-n", namespace)
        phases = {line.split()[1] for line in table.splitlines()[1:] if len(line.split()) > 1}
        if phases - seen:
            print(table, end="", flush=True)
            seen |= phases
        if "Running" in phases:
            break
        time.sleep(1)
    print(
        kubectl("get", "pods", "-n", namespace, "-l", "sparsam.dev/role=worker", "-o", "wide"),
        end="",
    )


def _serving(kubectl: Kubectl, namespace: str, say: Say) -> None:
    def status() -> dict[str, Any]:
        found = json.loads(kubectl("get", "inferenceservice", SERVICE, "-n", namespace, "-o=json"))
        return dict(found.get("status") or {})

    def show() -> None:
        print(kubectl("get", "inferenceservice", SERVICE, "-n", namespace), end="", flush=True)

    _until(lambda: status().get("phase") == "ScaledToZero", 60)
    say(f"the InferenceService {SERVICE} sits at zero replicas:")
    show()
    url = status()["url"]
    for attempt in ("first", "second"):
        say(f"the {attempt} request, at zero replicas: POST {url}/v1/predict")
        took, answer = _predict(url)
        say(f"answered in {took:.1f} s (the wake, the replica's start, the model's load), {answer}")
        _until(lambda: status().get("phase") == "Active", 30)
        show()
        say(
            f"status.lastColdStartSeconds: {status().get('lastColdStartSeconds')} (to the"
            " replica's Ready condition, in whole seconds; KWOK marks a pod Ready before the"
            " server behind it has loaded, which the request's own time above includes)"
        )
        if attempt == "second":
            break
        say("no traffic now; scaleToZeroAfter is 20s (kubectl get infer -w shows it)")
        _until(lambda: status().get("phase") == "ScaledToZero", 120)
        show()


def _service() -> dict[str, Any]:
    return {
        "apiVersion": "sparsam.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": SERVICE},
        "spec": {
            "model": {"uri": f"pvc://models/{SERVICE}"},
            "resources": {"gpus": 1, "cpu": "500m", "memory": "512Mi"},
            "replicas": {"min": 0, "max": 2},
            "scaling": {"target": 5, "scaleToZeroAfter": "20s", "scaleDownDelay": "10s"},
        },
    }


def _predict(url: str) -> tuple[float, str]:
    body = json.dumps({"instances": [[[0] * 28] * 28]}).encode()
    request = urllib.request.Request(  # noqa: S310 - the activator's http URL
        f"{url}/v1/predict", body, {"Content-Type": "application/json"}, method="POST"
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=180) as reply:  # noqa: S310
        answer = json.loads(reply.read())
    prediction = answer["predictions"][0]
    return time.monotonic() - started, f"label {prediction['label']}"


def _until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout:g}s")
        time.sleep(1)


@contextmanager
def _process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`sparsam ARGS` in the background, its output in `log`, stopped on leaving."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sparsam.cli", *args], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
