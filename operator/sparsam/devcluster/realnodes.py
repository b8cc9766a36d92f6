"""Real nodes: a kubelet and a containerd per node, as local processes, running real containers.

Each node has its own folder under the cluster's (`nodes/<name>/`): containerd's root, state,
socket and runc root, the kubelet's root and certificates, its pod logs and its IPAM records. So a
node's containers are found by node, and a node can vanish the way a spot instance does: SIGKILL
to its kubelet, its containerd, its shims and every container, then its Node object deleted.

All real nodes of a cluster share one bridge (see `nodeconfig`); CoreDNS runs on the bridge's
address and answers the cluster's names from the apiserver. Images come only from OCI archives,
imported into each node's containerd at its start; the node's containerd is pointed at a closed
loopback proxy, so a pod that names any other image fails instead of pulling.

Everything started is recorded in the cluster's state.json: `down` and `status` find it from any
process, and `down` leaves no process, mount, network namespace, interface or cgroup behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import yaml

from sparsam.api import constants as c
from sparsam.devcluster import hostops, nodeconfig, nodes, pki
from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.lock import file_lock
from sparsam.devcluster.nodeconfig import NodePaths, PodNetwork
from sparsam.devcluster.processes import Process, alive, arm, free_port, spawn, stop, tail
from sparsam.devcluster.tools import Binaries

if TYPE_CHECKING:
    from sparsam.devcluster.cluster import DevCluster, State

COREDNS: Final = "coredns"
START_TIMEOUT: Final = 90.0
#: What a real node needs from the machine (Debian: containerd, runc, containernetworking-plugins).
HOST_BINARIES: Final = ("containerd", "containerd-shim-runc-v2", "ctr", "runc")
CNI_PLUGINS: Final = ("bridge", "host-local", "loopback")
INSTALL_HINT: Final = (
    "run `make container-tools` (Debian: containerd runc containernetworking-plugins)"
)


class Archive(Protocol):
    """An OCI image archive and the reference containerd names the image by."""

    @property
    def ref(self) -> str: ...

    @property
    def path(self) -> Path: ...


@dataclass(frozen=True, slots=True)
class RealNode:
    """One real node as state.json records it."""

    name: str
    slot: int
    ip: str
    dir: str
    gpu: str | None = None  # the instance type it presents, None for a CPU node
    capacity_type: str = c.CAPACITY_ON_DEMAND

    @property
    def paths(self) -> NodePaths:
        return NodePaths(Path(self.dir))

    def processes(self) -> tuple[str, str]:
        return (f"containerd/{self.name}", f"kubelet/{self.name}")


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node to start: its name, and what it presents itself as."""

    name: str
    gpu: str | None = None
    capacity_type: str = c.CAPACITY_ON_DEMAND

    def check(self) -> None:
        nodeconfig.check_node_name(self.name)
        if self.gpu is not None and self.gpu not in nodes.SHAPES:
            raise DevClusterError(
                f"--gpu {self.gpu!r}: expected one of {', '.join(sorted(nodes.SHAPES))}"
            )
        if self.capacity_type not in (c.CAPACITY_SPOT, c.CAPACITY_ON_DEMAND):
            raise DevClusterError(
                f"--capacity-type {self.capacity_type!r}: expected "
                f"{c.CAPACITY_SPOT} or {c.CAPACITY_ON_DEMAND}"
            )

    def labels(self) -> dict[str, str]:
        labels = {c.LABEL_CAPACITY_TYPE: self.capacity_type, "type": "real"}
        if self.gpu is not None:
            labels.update(nodes.gpu_labels(nodes.SHAPES[self.gpu], self.capacity_type))
        return labels

    def taints(self) -> list[dict[str, str]]:
        return nodes.gpu_taints(self.capacity_type, gpu=self.gpu is not None)


def default_specs(count: int) -> list[NodeSpec]:
    nodeconfig.check_count(count)
    return [NodeSpec(f"real-{i}") for i in range(count)]


# --- checks before anything starts ------------------------------------------------------------


def preflight(archives: Sequence[Archive]) -> None:
    """Everything a real node needs from the machine, checked before anything is started."""
    if os.geteuid() != 0:
        raise DevClusterError("real nodes need root (containers, mounts, a bridge)")
    for binary in HOST_BINARIES:
        if shutil.which(binary) is None:
            raise DevClusterError(f"{binary} is not on PATH: {INSTALL_HINT}")
    for plugin in CNI_PLUGINS:
        if not (nodeconfig.CNI_BIN_DIR / plugin).is_file():
            raise DevClusterError(
                f"the CNI plugin {nodeconfig.CNI_BIN_DIR / plugin} is missing: {INSTALL_HINT}"
            )
    missing_cgroups = hostops.cgroups_available()
    if missing_cgroups is not None:
        raise DevClusterError(f"containers need cgroups: {missing_cgroups}")
    if shutil.which("ip") is None:
        raise DevClusterError("the `ip` command is not on PATH (Debian's iproute2)")
    for archive in archives:
        check_archive(archive)


def check_archive(archive: Archive) -> None:
    """An OCI archive whose index names the image `archive.ref`: read, not trusted."""
    import tarfile

    try:
        with tarfile.open(archive.path) as tar:
            member = tar.extractfile("index.json")
            if member is None:
                raise KeyError("index.json")
            index = json.load(member)
    except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
        raise DevClusterError(
            f"image archive {archive.path} is missing or not an OCI archive ({exc})"
        ) from None
    names = {
        m.get("annotations", {}).get("io.containerd.image.name") for m in index.get("manifests", [])
    }
    if archive.ref not in names:
        raise DevClusterError(f"image archive {archive.path} does not hold {archive.ref}")


# --- the pod network and the cluster DNS -------------------------------------------------------


def _network_lock() -> Path:
    from sparsam.devcluster.cluster import state_root

    return state_root() / "pod-networks.lock"


def ensure_network(cluster: DevCluster, state: State, binaries: Binaries) -> PodNetwork:
    """The cluster's bridge and CoreDNS, started once; a dead CoreDNS is started again."""
    network = state.network
    if network is None:
        # Machine-wide: two clusters coming up at once must not pick the same subnet.
        with file_lock(_network_lock()):
            subnet = nodeconfig.free_subnet(hostops.networks_in_use())
            network = nodeconfig.pod_network(cluster.name, subnet)
            state.network = network
            state.save(cluster.state_file)
            hostops.create_bridge(network.bridge, network.gateway, subnet.prefixlen)
    elif not hostops.link_exists(network.bridge):
        hostops.create_bridge(network.bridge, network.gateway, network.network.prefixlen)
    dns = next((p for p in state.processes if p.name == COREDNS), None)
    if dns is None or not alive(dns):
        state.processes = [p for p in state.processes if p.name != COREDNS]
        _start_coredns(cluster, state, binaries, network)
    return network


def _start_coredns(
    cluster: DevCluster, state: State, binaries: Binaries, network: PodNetwork
) -> None:
    port = free_port()
    folder = cluster.dir / "coredns"
    folder.mkdir(exist_ok=True)
    (folder / "Corefile").write_text(nodeconfig.corefile(network, cluster.kubeconfig, port))
    popen = _spawn(
        cluster, state, COREDNS, [str(binaries["coredns"]), "-conf", "Corefile"], port, folder
    )
    _wait(
        lambda: _http_ok(f"http://127.0.0.1:{port}/health"),
        popen,
        COREDNS,
        cluster.logs / f"{COREDNS}.log",
        START_TIMEOUT,
    )


def teardown_network(state: State) -> list[Process]:
    """Stop CoreDNS and delete the bridge (after every node is gone)."""
    stopped = [p for p in state.processes if p.name == COREDNS and alive(p)]
    for process in stopped:
        stop(process)
    state.processes = [p for p in state.processes if p.name != COREDNS]
    if state.network is not None:
        for name in hostops.netns_names():  # a pod's namespace whose node is already gone
            address = hostops.netns_pod_ip(name)
            if address is not None and address in state.network.network:
                hostops.delete_netns(name)
        hostops.delete_link(state.network.bridge)
        state.network = None
    return stopped


# --- nodes --------------------------------------------------------------------------------------


def start_nodes(
    cluster: DevCluster,
    state: State,
    binaries: Binaries,
    specs: Sequence[NodeSpec],
    sandbox: Archive,
    images: Sequence[Archive],
    kubectl: Callable[..., str],
) -> list[RealNode]:
    """Start nodes and wait until each is Ready; on any failure stop all of them and raise.

    Their containerds start one after another, import the images side by side (unpacking an
    image is most of a node's start), then their kubelets start one after another.
    """
    network = ensure_network(cluster, state, binaries)
    begun: list[RealNode] = []
    try:
        for spec in specs:
            spec.check()
            if any(n.name == spec.name for n in state.real_nodes):
                raise DevClusterError(f"a real node named {spec.name!r} is already in the cluster")
            slot = nodeconfig.free_slot(n.slot for n in state.real_nodes)
            node = RealNode(
                spec.name,
                slot,
                network.node_ip(slot),
                str(cluster.dir / "nodes" / spec.name),
                spec.gpu,
                spec.capacity_type,
            )
            shutil.rmtree(node.dir, ignore_errors=True)
            state.real_nodes.append(node)
            state.save(cluster.state_file)
            begun.append(node)
            hostops.add_address(network.bridge, node.ip)
            _start_containerd(cluster, state, node, network, sandbox)
        with ThreadPoolExecutor(max_workers=len(begun) or 1) as pool:
            for done in [
                pool.submit(import_image, node.paths.socket, archive)
                for node in begun
                for archive in (sandbox, *images)
            ]:
                done.result()
        for node, spec in zip(begun, specs, strict=True):
            _start_kubelet(cluster, state, binaries, node, spec, network)
        for node, spec in zip(begun, specs, strict=True):
            _wait_ready(cluster, state, node, kubectl)
            if spec.gpu is not None:
                _present_gpus(kubectl, node.name, nodes.SHAPES[spec.gpu].gpus)
    except BaseException:
        for node in begun:
            teardown_node(state, node)
            _delete_node_object(kubectl, node.name)
        state.save(cluster.state_file)
        raise
    return begun


def _start_containerd(
    cluster: DevCluster,
    state: State,
    node: RealNode,
    network: PodNetwork,
    sandbox: Archive,
) -> None:
    paths = node.paths
    for folder in (paths.containerd_root, paths.containerd_state, paths.cni_conf_dir):
        folder.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(nodeconfig.containerd_config(paths, sandbox.ref))
    conflist = nodeconfig.cni_conflist(network, node.slot, paths.ipam_dir)
    (paths.cni_conf_dir / "10-sparsam.conflist").write_text(json.dumps(conflist, indent=2))
    containerd = shutil.which("containerd")
    if containerd is None:
        raise DevClusterError(f"containerd is not on PATH: {INSTALL_HINT}")
    env = {
        **os.environ,
        "HTTP_PROXY": nodeconfig.NO_REGISTRY_PROXY,
        "HTTPS_PROXY": nodeconfig.NO_REGISTRY_PROXY,
        "NO_PROXY": "",
    }
    name = f"containerd/{node.name}"
    popen = _spawn(
        cluster,
        state,
        name,
        [containerd, "--config", str(paths.containerd_config)],
        0,
        paths.dir,
        env,
    )
    log = _log(cluster, name)
    _wait(lambda: _socket_answers(paths.socket), popen, name, log, START_TIMEOUT)


def import_image(socket_path: Path, archive: Archive) -> None:
    """Import an OCI archive into a node's containerd (the CRI's namespace), unpacked."""
    check_archive(archive)
    ctr = shutil.which("ctr") or "ctr"
    done = subprocess.run(
        [ctr, "--address", str(socket_path), "-n", "k8s.io", "images", "import", str(archive.path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise DevClusterError(
            f"importing {archive.path} failed: {done.stderr.strip().splitlines()[-1:]}"
        )


def _start_kubelet(
    cluster: DevCluster,
    state: State,
    binaries: Binaries,
    node: RealNode,
    spec: NodeSpec,
    network: PodNetwork,
) -> None:
    paths = node.paths
    identity = pki.node_identity(node.name)
    pki.issue_client(cluster.pki, identity)
    pki.write_kubeconfig(
        paths.kubeconfig, cluster.pki, identity, f"https://127.0.0.1:{state.apiserver_port}"
    )
    ports = nodeconfig.KubeletPorts(free_port(node.ip), free_port())
    config = nodeconfig.kubelet_config(paths, node.ip, ports, cluster.pki / "ca.crt", network)
    paths.kubelet_config.write_text(yaml.safe_dump(config, sort_keys=False))
    arguments = nodeconfig.kubelet_arguments(
        paths, node.name, node.ip, spec.labels(), spec.taints()
    )
    name = f"kubelet/{node.name}"
    popen = _spawn(
        cluster, state, name, [str(binaries["kubelet"]), *arguments], ports.port, paths.dir
    )
    _wait(
        lambda: _http_ok(f"http://127.0.0.1:{ports.healthz}/healthz"),
        popen,
        name,
        _log(cluster, name),
        START_TIMEOUT,
    )


def _wait_ready(
    cluster: DevCluster, state: State, node: RealNode, kubectl: Callable[..., str]
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "not registered yet"
    while time.monotonic() < deadline:
        for process in state.processes:
            if process.name in node.processes() and not alive(process):
                raise DevClusterError(
                    f"{process.name} exited: {tail(_log(cluster, process.name))} "
                    f"(log: {_log(cluster, process.name)})"
                )
        try:
            found = json.loads(kubectl("get", "node", node.name, "-o", "json"))
        except DevClusterError:
            found = None
        if found is not None:
            for condition in found.get("status", {}).get("conditions", []):
                if condition["type"] == "Ready":
                    if condition["status"] == "True":
                        return
                    last = condition.get("message", "")
        time.sleep(0.5)
    raise DevClusterError(
        f"node {node.name} was not Ready within {START_TIMEOUT:.0f}s ({last}); "
        f"log: {_log(cluster, f'kubelet/{node.name}')}"
    )


def _present_gpus(kubectl: Callable[..., str], name: str, gpus: int) -> None:
    """Advertise GPUs the documented way for extended resources: the Node's status capacity.
    The kubelet keeps a resource it does not manage, and copies it to allocatable."""
    resource = c.GPU_RESOURCE.replace("/", "~1")
    patch = [{"op": "add", "path": f"/status/capacity/{resource}", "value": str(gpus)}]
    kubectl("patch", "node", name, "--subresource=status", "--type=json", "-p", json.dumps(patch))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        node = json.loads(kubectl("get", "node", name, "-o", "json"))
        if node["status"].get("allocatable", {}).get(c.GPU_RESOURCE) == str(gpus):
            return
        time.sleep(0.2)
    raise DevClusterError(f"node {name} did not show {gpus} {c.GPU_RESOURCE} as allocatable")


def teardown_node(state: State, node: RealNode, *, remove_files: bool = True) -> list[Process]:
    """Kill everything of one node at once (SIGKILL: no goodbye, like a reclaimed spot
    instance), then remove what the kill leaves: cgroups, network namespaces, mounts, and the
    node's folder unless `remove_files` is False (`down` keeps it, as it keeps the logs: a node
    with an image unpacked holds thousands of files, and the next `up` clears the folder)."""
    paths = node.paths
    containers = hostops.runc_containers(paths.runc_root)
    inodes = {hostops.netns_inode(x.pid) for x in containers if x.pid} - {None}
    mine = [p for p in state.processes if p.name in node.processes()]
    stopped = [p for p in mine if alive(p)]
    for process in stopped:
        stop(process, graceful=False)
    hostops.kill_pids(hostops.shim_pids(paths.socket))
    hostops.remove_shim_sockets(paths.socket, "k8s.io", (x.id for x in containers))
    hostops.kill_cgroups(cgroup for x in containers for cgroup in x.cgroups)
    for name in hostops.netns_names():
        address = hostops.netns_pod_ip(name) if state.network is not None else None
        if hostops.netns_inode_of(name) in inodes or _in_pod_range(
            state.network, node.slot, address
        ):
            hostops.delete_netns(name)
    hostops.unmount_under(paths.dir)
    hostops.remove_log_links(paths.pod_logs)
    if state.network is not None:
        hostops.remove_address(state.network.bridge, node.ip)
    hostops.remove_cni_results(x.id for x in containers)
    if remove_files:
        shutil.rmtree(paths.dir, ignore_errors=True)
    hostops.remove_empty_cgroups("k8s.io")
    state.processes = [p for p in state.processes if p.name not in node.processes()]
    state.real_nodes = [n for n in state.real_nodes if n.name != node.name]
    return stopped


def _in_pod_range(network: PodNetwork | None, slot: int, address: IPv4Address | None) -> bool:
    if network is None or address is None:
        return False
    start, end = (IPv4Address(a) for a in network.pod_range(slot))
    return start <= address <= end


def teardown_all(state: State) -> list[Process]:
    """Every real node, then the network: what `down` does before the control plane."""
    stopped: list[Process] = []
    for node in list(state.real_nodes):
        stopped += teardown_node(state, node, remove_files=False)
    stopped += teardown_network(state)
    return stopped


# --- what the CLI calls -------------------------------------------------------------------------


def add_nodes(
    cluster: DevCluster,
    binaries: Binaries,
    specs: Sequence[NodeSpec],
    sandbox: Archive,
    images: Sequence[Archive],
    kubectl: Callable[..., str],
    log: Callable[[str], None] = lambda _: None,
    *,
    existing_ok: bool = True,
) -> list[RealNode]:
    """Start the nodes of `specs` that are not running (one whose processes died is started
    anew; a running one is an error unless `existing_ok`); on a failure, stop the ones this
    call started and raise."""
    for spec in specs:
        spec.check()
    preflight([sandbox, *images])
    started: list[RealNode] = []
    with file_lock(cluster.dir.parent / f"{cluster.name}.lock"):
        state = _state(cluster)
        try:
            wanted = []
            for spec in specs:
                existing = next((n for n in state.real_nodes if n.name == spec.name), None)
                if existing is not None:
                    if _node_alive(state, existing):
                        if existing_ok:
                            continue
                        raise DevClusterError(
                            f"a real node named {spec.name!r} is already in the cluster"
                        )
                    teardown_node(state, existing)  # its processes died: start it anew
                    _delete_node_object(kubectl, existing.name)
                wanted.append(spec)
            begun = time.monotonic()
            if wanted:
                started = start_nodes(cluster, state, binaries, wanted, sandbox, images, kubectl)
            for node in started:
                log(f"real node {node.name} Ready at {node.ip} ({time.monotonic() - begun:.1f}s)")
        except BaseException:
            if not state.real_nodes:
                teardown_network(state)
            state.save(cluster.state_file)
            raise
        state.save(cluster.state_file)
    return started


def vanish(cluster: DevCluster, name: str, kubectl: Callable[..., str]) -> list[Process]:
    """The node is gone as a reclaimed spot instance is: everything killed, its Node deleted."""
    with file_lock(cluster.dir.parent / f"{cluster.name}.lock"):
        state = _state(cluster)
        node = next((n for n in state.real_nodes if n.name == name), None)
        if node is None:
            known = ", ".join(n.name for n in state.real_nodes) or "none"
            raise DevClusterError(f"no real node named {name!r} (real nodes: {known})")
        stopped = teardown_node(state, node)
        state.save(cluster.state_file)
    _delete_node_object(kubectl, name)
    return stopped


def _state(cluster: DevCluster) -> State:
    state = cluster.state()
    if state is None or not cluster.running():
        raise DevClusterError(
            f"dev cluster {cluster.name!r} is not running: run `sparsam dev-cluster up`"
        )
    return state


def _node_alive(state: State, node: RealNode) -> bool:
    mine = [p for p in state.processes if p.name in node.processes()]
    return len(mine) == 2 and all(alive(p) for p in mine)


def _delete_node_object(kubectl: Callable[..., str], name: str) -> None:
    with contextlib.suppress(DevClusterError):  # the control plane is gone too
        kubectl("delete", "node", name, "--ignore-not-found", "--wait=false")


# --- processes ----------------------------------------------------------------------------------


def _log(cluster: DevCluster, name: str) -> Path:
    return cluster.logs / f"{name.replace('/', '-')}.log"


def _spawn(
    cluster: DevCluster,
    state: State,
    name: str,
    argv: list[str],
    port: int,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    popen, process = spawn(
        name, argv, port, _log(cluster, name), cluster.record(name), cwd, env=env
    )
    state.processes.append(process)
    state.save(cluster.state_file)
    return popen


def _wait(
    ready: Callable[[], bool],
    popen: subprocess.Popen[bytes],
    name: str,
    log: Path,
    timeout: float,
) -> None:
    """Wait until `ready`, then have the supervisor restart the process when it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise DevClusterError(
                f"{name} exited with code {popen.returncode}: {tail(log)} (log: {log})"
            )
        if ready():
            arm(popen)
            return
        time.sleep(0.1)
    raise DevClusterError(f"{name} was not ready within {timeout:.0f}s; log: {log}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True
