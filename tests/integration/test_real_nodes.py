"""Real nodes run real containers: a dev cluster of its own with two kubelets and containerds,
pods on one bridge, cluster DNS, a node that vanishes like a spot instance, and a `down` that
leaves nothing behind on the machine."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparsam.api import constants as c
from sparsam.devcluster import hostops, images, nodes, realnodes
from sparsam.devcluster.bootstrap import bring_up
from sparsam.devcluster.cluster import DevCluster, State, kubectl_runner
from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.processes import alive
from sparsam.devcluster.tools import Binaries

IMAGE = "operator"  # has python3; what the pods below run

SERVER = """\
import socket
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 8080))
server.listen()
while True:
    conn, _ = server.accept()
    conn.sendall(socket.gethostname().encode())
    conn.close()
"""

CLIENT = """\
import socket, sys, time
error = None
for _ in range(120):  # the name resolves once the endpoint controller published the pod
    try:
        address = socket.getaddrinfo(sys.argv[1], 8080, socket.AF_INET, socket.SOCK_STREAM)[0][4]
        with socket.create_connection(address, timeout=2) as conn:
            print(address[0], conn.recv(64).decode())
            sys.exit(0)
    except OSError as exc:
        error = exc
        time.sleep(0.25)
print("failed:", error)
sys.exit(1)
"""


@dataclass(frozen=True)
class RealCluster:
    dev: DevCluster
    binaries: Binaries
    image: images.ImageArchive

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        done = subprocess.run(
            [str(self.binaries["kubectl"]), f"--kubeconfig={self.dev.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def state(self) -> State:
        state = self.dev.state()
        assert state is not None
        return state

    def node(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.kubectl("get", "node", name, "-o", "json"))
        return found

    def pod(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.kubectl("get", "pod", name, "-o", "json"))
        return found

    def wait_phase(self, name: str, phase: str, timeout: int = 60) -> dict[str, Any]:
        self.kubectl(
            "wait", f"--for=jsonpath={{.status.phase}}={phase}", f"--timeout={timeout}s",
            f"pod/{name}",
        )  # fmt: skip
        return self.pod(name)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    dev = DevCluster(f"pytest-real-{os.getpid()}", root=tmp_path_factory.mktemp("real"))
    try:
        image = images.ensure_image(IMAGE)
        binaries = bring_up(dev, real_nodes=2, node_images=[IMAGE])
    except DevClusterError as exc:
        dev.down()
        pytest.fail(f"the dev cluster with real nodes did not come up: {exc}", pytrace=False)
    try:
        yield RealCluster(dev, binaries, image)
    finally:
        dev.down()


def _gone(pid: int) -> bool:
    """No such process, or a zombie (killed; its new parent reaps it when it gets to it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _pod(
    name: str,
    image: str,
    script: str,
    *args: str,
    node: str | None = None,
    restart: str = "Never",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            **({"nodeName": node} if node else {}),
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", script, *args],
                }
            ],
            **spec,
        },
    }


def test_both_nodes_are_ready_on_containerd(real: RealCluster) -> None:
    state = real.state()
    assert state.network is not None
    for node in state.real_nodes:
        found = real.node(node.name)
        conditions = {x["type"]: x["status"] for x in found["status"]["conditions"]}
        assert conditions["Ready"] == "True"
        assert found["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
        addresses = {x["type"]: x["address"] for x in found["status"]["addresses"]}
        assert addresses["InternalIP"] == node.ip
    assert [n.name for n in state.real_nodes] == ["real-0", "real-1"]


def test_a_pod_runs_to_completion_and_its_log_is_read_through_the_kubelet(
    real: RealCluster,
) -> None:
    manifest = _pod("hello", real.image.ref, "import os; print('hello from', os.uname().nodename)")
    real.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    pod = real.wait_phase("hello", "Succeeded")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert real.kubectl("logs", "hello").strip() == "hello from hello"


def test_a_pod_finds_a_pod_on_the_other_node_by_its_headless_name(real: RealCluster) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "peers"},
        "spec": {"clusterIP": "None", "selector": {"app": "server"}, "ports": [{"port": 8080}]},
    }
    server = _pod(
        "server", real.image.ref, SERVER, node="real-0", hostname="server", subdomain="peers"
    )
    name = "server.peers.default.svc.cluster.local"
    client = _pod("client", real.image.ref, CLIENT, name, node="real-1")
    real.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([service, server, client]))
    done = real.wait_phase("client", "Succeeded", timeout=90)
    server_ip = real.pod("server")["status"]["podIP"]
    assert real.kubectl("logs", "client").split() == [server_ip, "server"]
    assert done["spec"]["nodeName"] != real.pod("server")["spec"]["nodeName"]
    # The host reaches a pod at its address, through the bridge (and nothing else does).
    with socket.create_connection((server_ip, 8080), timeout=5) as conn:
        assert conn.recv(64) == b"server"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"


def test_up_again_leaves_running_nodes_as_they_are(real: RealCluster) -> None:
    before = {p.name: p.pid for p in real.state().processes}
    bring_up(real.dev, real_nodes=2, node_images=[IMAGE])
    assert {p.name: p.pid for p in real.state().processes} == before


def test_an_image_no_node_has_is_never_pulled_from_a_registry(real: RealCluster) -> None:
    manifest = _pod("elsewhere", "registry.invalid/nothing:1", "pass", node="real-0")
    real.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    deadline = time.monotonic() + 60
    message = ""
    while "127.0.0.1:9" not in message and time.monotonic() < deadline:
        events = real.kubectl(
            "get", "events", "--field-selector", "involvedObject.name=elsewhere", "-o", "json"
        )
        message = " ".join(e.get("message", "") for e in json.loads(events)["items"])
        time.sleep(0.5)
    assert "127.0.0.1:9" in message, message  # the closed loopback proxy, not the registry


def test_a_gpu_node_takes_gpu_pods_then_vanishes_like_a_spot_instance(real: RealCluster) -> None:
    shape = nodes.G6E_XLARGE
    kubectl = kubectl_runner(real.binaries["kubectl"], real.dev.kubeconfig)
    pause = images.ensure_image("pause")  # the worker runs the pause image: it waits forever
    spec = realnodes.NodeSpec("gpu-spot-0", shape.instance_type, c.CAPACITY_SPOT)
    realnodes.add_nodes(real.dev, real.binaries, [spec], pause, [], kubectl)
    found = real.node("gpu-spot-0")
    assert found["status"]["allocatable"][c.GPU_RESOURCE] == str(shape.gpus)
    assert found["metadata"]["labels"][c.LABEL_GPU_PRODUCT] == shape.gpu_product
    assert found["metadata"]["labels"][c.LABEL_CAPACITY_TYPE] == c.CAPACITY_SPOT
    assert {t["key"] for t in found["spec"]["taints"]} == {c.TAINT_GPU, c.TAINT_SPOT}

    tolerations = [
        {"key": c.TAINT_GPU, "operator": "Exists"},
        {"key": c.TAINT_SPOT, "operator": "Exists"},
    ]
    worker = _pod("worker", pause.ref, "", tolerations=tolerations)
    del worker["spec"]["containers"][0]["command"]
    worker["spec"]["containers"][0]["resources"] = {"limits": {c.GPU_RESOURCE: "1"}}
    real.kubectl("apply", "-f", "-", input=yaml.safe_dump(worker))
    assert real.wait_phase("worker", "Running")["spec"]["nodeName"] == "gpu-spot-0"

    node = next(n for n in real.state().real_nodes if n.name == "gpu-spot-0")
    containers = hostops.runc_containers(node.paths.runc_root)
    assert len(containers) == 2  # the sandbox and the worker
    processes = [p for p in real.state().processes if p.name in node.processes()]
    realnodes.vanish(real.dev, "gpu-spot-0", kubectl)

    assert not any(alive(p) for p in processes)
    assert not hostops.shim_pids(node.paths.socket)
    for container in containers:
        assert _gone(container.pid), "the container's process is gone"
        assert not any(g.exists() for g in container.cgroups)
    assert not node.paths.dir.exists()
    assert real.kubectl("get", "node", "gpu-spot-0", "--ignore-not-found").strip() == ""
    assert "gpu-spot-0" not in {n.name for n in real.state().real_nodes}

    # A new node joins under the same name, as a replacement instance does, and then goes.
    realnodes.add_nodes(real.dev, real.binaries, [spec], pause, [], kubectl)
    assert real.node("gpu-spot-0")["status"]["allocatable"][c.GPU_RESOURCE] == str(shape.gpus)
    realnodes.vanish(real.dev, "gpu-spot-0", kubectl)


def test_a_node_that_fails_to_start_leaves_nothing_and_names_are_unique(
    real: RealCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubectl = kubectl_runner(real.binaries["kubectl"], real.dev.kubeconfig)
    pause = images.ensure_image("pause")
    with pytest.raises(DevClusterError, match="already in the cluster"):
        realnodes.add_nodes(
            real.dev, real.binaries, [realnodes.NodeSpec("real-0")], pause, [], kubectl,
            existing_ok=False,
        )  # fmt: skip
    # A containerd that cannot start (here: one that exits at once) is named, and the node's
    # half (its folder, its recorded processes, its Node) is gone; the cluster runs on.
    broken = tmp_path / "bin"
    broken.mkdir()
    (broken / "containerd").write_text("#!/bin/sh\necho 'containerd: cannot start' >&2\nexit 3\n")
    (broken / "containerd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{broken}:{os.environ['PATH']}")
    with pytest.raises(DevClusterError, match=r"containerd/broken exited with code 3"):
        realnodes.add_nodes(
            real.dev, real.binaries, [realnodes.NodeSpec("broken")], pause, [], kubectl
        )
    state = real.state()
    assert "broken" not in {n.name for n in state.real_nodes}
    assert not any(p.name.endswith("/broken") for p in state.processes)
    assert not (real.dev.dir / "nodes" / "broken").exists()
    assert real.kubectl("get", "node", "broken", "--ignore-not-found").strip() == ""
    assert real.dev.running() and len(state.real_nodes) == 2


def test_down_leaves_nothing_behind(real: RealCluster) -> None:
    state = real.state()
    assert state.network is not None
    network = state.network
    sockets = [n.paths.socket for n in state.real_nodes]
    processes = list(state.processes)
    real.dev.down()

    assert not any(alive(p) for p in processes)
    assert not any(hostops.shim_pids(s) for s in sockets)
    folder = str(real.dev.dir.resolve())
    mounts = Path("/proc/self/mountinfo").read_text()
    assert folder not in mounts
    assert not hostops.link_exists(network.bridge)
    for name in hostops.netns_names():
        address = hostops.netns_pod_ip(name)
        assert address is None or address not in network.network, name
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
    if shutil.which("iptables-save"):
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False)
        assert network.subnet not in rules.stdout
        assert network.bridge not in rules.stdout
