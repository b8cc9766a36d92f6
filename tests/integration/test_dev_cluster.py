"""The dev cluster is a real control plane: our CRDs are served, the scheduler places GPU pods on
KWOK nodes by capacity, taints and selectors, and `down` leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from sparsam import cli
from sparsam.api import constants as c
from sparsam.devcluster import audit, pki, tools
from sparsam.devcluster.cluster import DevCluster, alive

if TYPE_CHECKING:
    from tests.conftest import Cluster, Kubectl

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_all_crds_are_established(kubectl: Kubectl) -> None:
    for resource in c.RESOURCES:
        crd = json.loads(kubectl("get", "crd", resource.crd_name, "-o", "json").stdout)
        conditions = {x["type"]: x["status"] for x in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", resource.crd_name
        assert conditions.get("NamesAccepted") == "True", resource.crd_name
        assert crd["spec"]["names"]["shortNames"] == list(resource.short_names)


def test_kubectl_explain_teaches_the_api(kubectl: Kubectl) -> None:
    crd = yaml.safe_load((ROOT / "crds" / "sparsam.dev_trainingjobs.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    description = schema["properties"]["spec"]["properties"]["workers"]["description"]
    explained = kubectl("explain", "trainingjob.spec.workers").stdout
    first_words = " ".join(description.split()[:6])
    assert first_words in " ".join(explained.split())
    assert "min" in explained and "max" in explained


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_applies(kubectl: Kubectl, namespace: str, path: Path) -> None:
    applied = kubectl("apply", "-n", namespace, "-f", str(path)).stdout
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert applied.count("created") + applied.count("configured") + applied.count(
        "unchanged"
    ) == len(documents)
    kubectl("delete", "-n", namespace, "-f", str(path), "--wait=false")


def test_get_trainingjobs_shows_the_printer_columns(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "trainingjob.yaml"))
    header = kubectl("get", "tj", "-n", namespace).stdout.splitlines()[0].split()
    for column in ("NAME", "PHASE", "WORKERS", "COST", "SAVINGS", "AGE"):
        assert column in header


def _pod(name: str, gpus: int, tolerate_spot: bool, spot_only: bool) -> dict[str, Any]:
    tolerations = [{"key": c.TAINT_GPU, "operator": "Exists", "effect": "NoSchedule"}]
    if tolerate_spot:
        tolerations.append(
            {
                "key": c.TAINT_SPOT,
                "operator": "Equal",
                "value": c.CAPACITY_SPOT,
                "effect": "NoSchedule",
            }
        )
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "worker",
                "image": "registry.invalid/trainer:1",
                "resources": {"limits": {c.GPU_RESOURCE: str(gpus)}},
            }
        ],
        "tolerations": tolerations,
    }
    if spot_only:
        spec["nodeSelector"] = {c.LABEL_CAPACITY_TYPE: c.CAPACITY_SPOT}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _wait_pod(kubectl: Kubectl, namespace: str, name: str, jsonpath: str, value: str) -> None:
    kubectl(
        "wait",
        f"--for=jsonpath={jsonpath}={value}",
        f"pod/{name}",
        "-n",
        namespace,
        "--timeout=60s",
    )


def _node_of(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    pod = json.loads(kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)
    node = kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json").stdout
    return dict(json.loads(node))


def test_gpu_pod_with_spot_toleration_runs_on_a_spot_gpu_node(
    kubectl: Kubectl, namespace: str
) -> None:
    pod = _pod("spot-worker", gpus=1, tolerate_spot=True, spot_only=True)
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod))
    _wait_pod(kubectl, namespace, "spot-worker", "{.status.phase}", "Running")
    node = _node_of(kubectl, namespace, "spot-worker")
    assert node["metadata"]["labels"][c.LABEL_CAPACITY_TYPE] == c.CAPACITY_SPOT
    assert int(node["status"]["capacity"][c.GPU_RESOURCE]) >= 1
    # KWOK gives pods an address from the loopback range, where host processes can listen.
    ip = json.loads(kubectl("get", "pod", "spot-worker", "-n", namespace, "-o", "json").stdout)[
        "status"
    ]["podIP"]
    assert ip.startswith("127.1.")


def test_spot_taint_keeps_intolerant_pods_on_demand(kubectl: Kubectl, namespace: str) -> None:
    pod = _pod("steady-worker", gpus=1, tolerate_spot=False, spot_only=False)
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod))
    _wait_pod(kubectl, namespace, "steady-worker", "{.status.phase}", "Running")
    node = _node_of(kubectl, namespace, "steady-worker")
    assert node["metadata"]["labels"][c.LABEL_CAPACITY_TYPE] == c.CAPACITY_ON_DEMAND


def test_pod_asking_for_more_gpus_than_any_node_stays_pending(
    kubectl: Kubectl, namespace: str
) -> None:
    pod = _pod("too-big", gpus=64, tolerate_spot=True, spot_only=False)
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod))
    _wait_pod(
        kubectl,
        namespace,
        "too-big",
        '{.status.conditions[?(@.type=="PodScheduled")].reason}',
        "Unschedulable",
    )
    got = json.loads(kubectl("get", "pod", "too-big", "-n", namespace, "-o", "json").stdout)
    assert got["status"]["phase"] == "Pending"
    scheduled = next(x for x in got["status"]["conditions"] if x["type"] == "PodScheduled")
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]


def test_audit_log_says_who_created_and_deleted_a_pod_and_when(
    kubectl: Kubectl, namespace: str, cluster: Cluster
) -> None:
    if cluster.dev is None:
        pytest.skip("runs against an existing cluster (SPARSAM_TEST_KUBECONFIG): no audit log")
    before = time.time()
    pod = _pod("audited", gpus=0, tolerate_spot=False, spot_only=False)
    kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod))
    after = time.time()
    kubectl("delete", "pod", "audited", "-n", namespace, "--wait=false")
    ours = [w for w in audit.read(cluster.dev.audit_log) if w.namespace == namespace]
    created = audit.created(ours, "pods")
    assert before <= created[namespace, "audited"] <= after, "the apiserver's clock is ours"
    # KWOK, playing the kubelet, may have ended the deleted pod by now (a delete of its own).
    mine = [(w.verb, w.name) for w in ours if w.resource == "pods" and w.user == pki.ADMIN.user]
    assert mine == [("create", "audited"), ("delete", "audited")]


def test_audit_log_has_when_a_trainingjobs_status_was_first_written(
    kubectl: Kubectl, namespace: str, cluster: Cluster
) -> None:
    if cluster.dev is None:
        pytest.skip("runs against an existing cluster (SPARSAM_TEST_KUBECONFIG): no audit log")
    kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "trainingjob.yaml"))
    before = time.time()
    for phase in ("Pending", "Running"):
        kubectl(
            "patch",
            "trainingjob",
            "bbc-minilm",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": phase}}),
        )
    after = time.time()
    ours = [w for w in audit.read(cluster.dev.audit_log) if w.namespace == namespace]
    first = audit.first_status(ours, c.TRAINING_JOB.plural)
    assert before <= first[namespace, "bbc-minilm"] <= after
    assert [w.verb for w in ours if w.subresource == "status"] == ["patch", "patch"]


def _sparsam(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sparsam", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def test_up_is_idempotent_and_down_leaves_no_process(tmp_path: Path, cluster: Cluster) -> None:
    # A second cluster beside the session's, driven through the CLI as a user would.
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    if cluster.dev is None:
        pytest.skip(
            "runs against an existing cluster (SPARSAM_TEST_KUBECONFIG): no dev cluster "
            "to start and stop"
        )
    up = _sparsam("dev-cluster", "up", "--name", "lifecycle", env=env)
    assert up.returncode == 0, up.stderr
    dev = DevCluster("lifecycle", root=tmp_path / "sparsam" / "dev-clusters")
    state = dev.state()
    assert state is not None
    pids = {p.name: p.pid for p in state.processes}
    assert set(pids) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    }

    started = time.monotonic()
    again = _sparsam("dev-cluster", "up", "--name", "lifecycle", env=env)
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 20, "a second up reuses the running cluster"
    second = dev.state()
    assert second is not None
    assert {p.name: p.pid for p in second.processes} == pids

    assert _sparsam("dev-cluster", "status", "--name", "lifecycle", env=env).returncode == 0
    down = _sparsam("dev-cluster", "down", "--name", "lifecycle", env=env)
    assert down.returncode == 0, down.stderr
    for process in state.processes:
        assert not alive(process), f"{process.name} (pid {process.pid}) survived down"
    assert _sparsam("dev-cluster", "status", "--name", "lifecycle", env=env).returncode == 1


@pytest.mark.parametrize(
    ("binary", "args", "version"),
    [
        ("kube-apiserver", ("--version",), tools.KUBERNETES_VERSION),
        ("kubectl", ("version", "--client"), tools.KUBERNETES_VERSION),
        ("etcd", ("--version",), tools.ETCD_VERSION.lstrip("v")),
        ("kwok", ("--version",), tools.KWOK_VERSION.lstrip("v")),
        ("helm", ("version", "--short"), tools.HELM_VERSION),
    ],
    ids=["kube-apiserver", "kubectl", "etcd", "kwok", "helm"],
)
def test_binaries_report_their_pinned_version(
    binary: str, args: tuple[str, ...], version: str
) -> None:
    binaries = tools.ensure_binaries()
    if binary not in binaries.paths:
        pytest.skip(f"{binary} is not in SPARSAM_BIN_DIR")
    done = subprocess.run(
        [str(binaries[binary]), *args], capture_output=True, text=True, timeout=30, check=True
    )
    assert version in done.stdout + done.stderr


def _child_pids(dev: DevCluster, names: tuple[str, ...]) -> dict[str, int]:
    state = dev.state()
    assert state is not None
    records = {p.name: dev.supervision(p) for p in state.processes if p.name in names}
    return {name: r.pid for name, r in records.items() if r is not None and r.pid is not None}


def test_a_killed_scheduler_and_apiserver_come_back_and_status_says_so(
    kubectl: Kubectl, namespace: str, cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    if cluster.dev is None:
        pytest.skip("runs against an existing cluster (SPARSAM_TEST_KUBECONFIG): nothing to kill")
    dev = cluster.dev
    names = ("kube-apiserver", "kube-scheduler")
    before = _child_pids(dev, names)
    assert set(before) == set(names)
    for pid in before.values():
        os.kill(pid, signal.SIGKILL)

    deadline = time.monotonic() + 60
    after: dict[str, int] = {}
    while time.monotonic() < deadline:
        after = _child_pids(dev, names)
        if set(after) == set(names) and all(after[n] != before[n] for n in names):
            break
        time.sleep(0.2)
    assert set(after) == set(names) and all(after[n] != before[n] for n in names), after
    kubectl("wait", "--for=create", "namespace", namespace, "--timeout=60s")  # answers again

    # `sparsam dev-cluster status`'s own printing (the session's cluster is in a tmp folder).
    assert cli._status(dev, dev.name) == 0
    printed = capsys.readouterr().out
    lines = {line.split()[0]: line for line in printed.splitlines() if line.strip()}
    for name in names:
        assert "running" in lines[name] and "restarts 1" in lines[name], printed
        assert "last exit signal SIGKILL" in lines[name], printed
    assert "restarts 0" in lines["etcd"]

    # The restarted scheduler schedules.
    pod = _pod("after-restart", gpus=1, tolerate_spot=True, spot_only=False)
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod))
    _wait_pod(kubectl, namespace, "after-restart", "{.status.phase}", "Running")
