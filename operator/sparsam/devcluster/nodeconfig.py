"""What a real node of the dev cluster is made of, as plain data: its addresses, the pod network,
and the configuration files of its kubelet, containerd, CNI and the cluster DNS.

Nothing here touches the machine, so each rule can be read and tested on its own.

The pod network keeps every packet on this machine. All real nodes of one dev cluster plug their
pods into one Linux bridge, one L2 segment, so pods on different nodes talk without routing and
`net.ipv4.ip_forward` stays 0. The bridge's own address (set by us, not by CNI) is the one the
host and the cluster DNS use; pods get no default route (`isGateway: false`, no `routes`) and no
NAT (`ipMasq: false`), so there is nowhere for them to send to but the bridge's subnet.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sparsam.devcluster.errors import DevClusterError

MAX_REAL_NODES: Final = 8
#: Node i's InternalIP is the pod subnet's address 10 + i, put on the bridge: its kubelet
#: listens there and the apiserver calls it there (`kubectl logs/exec`). The kubelet refuses a
#: loopback node IP, and an address of our own bridge is as local: the traffic never leaves.
NODE_IP_OFFSET: Final = 10
CLUSTER_DOMAIN: Final = "cluster.local"
#: Pod networks are cut from here, one /20 per dev cluster: none of it is routed anywhere.
POD_NETWORK_POOL: Final = ipaddress.IPv4Network("10.250.0.0/16")
CLUSTER_PREFIX: Final = 20
#: Debian's containernetworking-plugins.
CNI_BIN_DIR: Final = Path("/usr/lib/cni")
#: Where a registry pull would go if a pod named an image no node has: a closed loopback port,
#: so it fails at once and nothing leaves the machine (images come only from archives).
NO_REGISTRY_PROXY: Final = "http://127.0.0.1:9"

_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class PodNetwork:
    """One dev cluster's pod network: a bridge, its /20, and a /24 of pod addresses per node."""

    name: str  # the CNI network name
    bridge: str
    subnet: str

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        """The bridge's address: the host's side of the pod network, and the cluster DNS."""
        return str(self.network.network_address + 1)

    def node_ip(self, slot: int) -> str:
        """Node `slot`'s InternalIP, in the first /24 (which no pod gets an address from)."""
        check_slot(slot)
        return str(self.network.network_address + NODE_IP_OFFSET + slot)

    def pod_range(self, slot: int) -> tuple[str, str]:
        """Node `slot`'s pod addresses: the (slot+1)-th /24 of the subnet, .1 to .254."""
        check_slot(slot)
        base = self.network.network_address + 256 * (slot + 1)
        return str(base + 1), str(base + 254)


def check_count(count: int) -> None:
    if not 1 <= count <= MAX_REAL_NODES:
        raise DevClusterError(f"--real-nodes {count}: expected 1 to {MAX_REAL_NODES}")


def check_slot(slot: int) -> None:
    if not 0 <= slot < MAX_REAL_NODES:
        raise DevClusterError(f"node slot {slot}: expected 0 to {MAX_REAL_NODES - 1}")


def check_node_name(name: str) -> None:
    """Node names become folder and cgroup names: a short DNS label, nothing else."""
    if not _NODE_NAME.match(name):
        raise DevClusterError(
            f"node name {name!r}: expected 1 to 40 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )


def free_slot(taken: Iterable[int]) -> int:
    """The lowest node slot not in `taken`."""
    used = set(taken)
    for slot in range(MAX_REAL_NODES):
        if slot not in used:
            return slot
    raise DevClusterError(f"the dev cluster already has {MAX_REAL_NODES} real nodes, the most")


def free_subnet(in_use: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first /20 of the pool that overlaps nothing the host already routes or addresses."""
    taken = list(in_use)
    for subnet in POD_NETWORK_POOL.subnets(new_prefix=CLUSTER_PREFIX):
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise DevClusterError(
        f"no free /{CLUSTER_PREFIX} left in {POD_NETWORK_POOL} for a pod network "
        "(every one overlaps a route or address of this machine)"
    )


def pod_network(cluster: str, subnet: ipaddress.IPv4Network) -> PodNetwork:
    """The network of `cluster` on `subnet`; the bridge is named by the subnet, which is unique
    on this machine while it exists (an interface name has at most 15 characters)."""
    index = (int(subnet.network_address) - int(POD_NETWORK_POOL.network_address)) >> (
        32 - CLUSTER_PREFIX
    )
    return PodNetwork(name=f"sparsam-{cluster}", bridge=f"sparsam-br{index}", subnet=str(subnet))


def cni_conflist(network: PodNetwork, slot: int, ipam_dir: Path) -> dict[str, Any]:
    """The CNI configuration of node `slot`: the shared bridge, the node's own address range."""
    start, end = network.pod_range(slot)
    return {
        "cniVersion": "1.0.0",
        "name": network.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                # The bridge's address is ours: no gateway, no default route, no NAT.
                "isGateway": False,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [
                        [
                            {
                                "subnet": network.subnet,
                                "rangeStart": start,
                                "rangeEnd": end,
                                "gateway": network.gateway,
                            }
                        ]
                    ],
                    "routes": [],
                },
            }
        ],
    }


@dataclass(frozen=True, slots=True)
class NodePaths:
    """Every file and folder of one real node, all under its own folder."""

    dir: Path

    @property
    def containerd_root(self) -> Path:
        return self.dir / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.dir / "containerd" / "state"

    @property
    def containerd_config(self) -> Path:
        return self.dir / "containerd" / "config.toml"

    @property
    def socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        """runc's state (one folder per container, with its pid and cgroups) for this node."""
        return self.dir / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.dir / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.dir / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet"

    @property
    def kubelet_certs(self) -> Path:
        return self.dir / "kubelet-pki"

    @property
    def kubelet_config(self) -> Path:
        return self.dir / "kubelet.yaml"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubelet.kubeconfig"

    @property
    def pod_logs(self) -> Path:
        return self.dir / "pod-logs"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def _toml_table(header: str, values: Mapping[str, object]) -> str:
    lines = [f"[{header}]"] if header else []
    lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    return "\n".join(lines)


#: containerd plugins a dev node never uses: fewer goroutines, and nothing written to /opt.
DISABLED_PLUGINS: Final = (
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)


def containerd_config(paths: NodePaths, sandbox_image: str) -> str:
    """containerd 1.6's configuration (version 2) for one node: its own root, state, socket and
    runc root, so its containers are found (and killed) by node."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runc = f"{cri}.containerd.runtimes.runc"
    tables = [
        _toml_table(
            "",
            {
                "version": 2,
                "root": paths.containerd_root,
                "state": paths.containerd_state,
                "disabled_plugins": list(DISABLED_PLUGINS),
            },
        ),
        _toml_table("grpc", {"address": paths.socket}),
        _toml_table("ttrpc", {"address": ""}),
        _toml_table("debug", {"address": "", "level": "info"}),
        _toml_table("metrics", {"address": ""}),
        _toml_table(
            cri,
            {
                "sandbox_image": sandbox_image,
                # Some machines (VMs, user namespaces) refuse to lower oom_score_adj, and the
                # kubelet asks -998 for every sandbox: runc then fails to start any pod.
                "restrict_oom_score_adj": True,
                "stream_server_address": "127.0.0.1",
                "stream_server_port": "0",
                "enable_selinux": False,
            },
        ),
        _toml_table(
            f"{cri}.containerd", {"snapshotter": "overlayfs", "default_runtime_name": "runc"}
        ),
        _toml_table(runc, {"runtime_type": "io.containerd.runc.v2"}),
        _toml_table(f"{runc}.options", {"Root": paths.runc_root, "SystemdCgroup": False}),
        _toml_table(
            f"{cri}.cni",
            {"bin_dir": CNI_BIN_DIR, "conf_dir": paths.cni_conf_dir, "max_conf_num": 1},
        ),
    ]
    return "\n\n".join(tables) + "\n"


@dataclass(frozen=True, slots=True)
class KubeletPorts:
    port: int
    healthz: int


def kubelet_config(
    paths: NodePaths, ip: str, ports: KubeletPorts, ca: Path, network: PodNetwork
) -> dict[str, Any]:
    """The KubeletConfiguration of one node: one of several kubelets on one machine."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": ip,
        "port": ports.port,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.healthz,
        "readOnlyPort": 0,
        "containerRuntimeEndpoint": f"unix://{paths.socket}",
        # cgroup v1 machines still run the kubelet, when it is told to (1.35 refuses otherwise).
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # Several kubelets share the machine's cgroups: none of them claims the hierarchy.
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        # A dev node: no eviction, and no image garbage collection (images come from archives
        # and cannot be pulled back).
        "evictionHard": {},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # No iptables rules on the host: nothing for `down` to undo.
        "makeIPTablesUtilChains": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca)},
        },
        # Only the apiserver (a client certificate of our CA) reaches the kubelet on loopback.
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": [network.gateway],
        "clusterDomain": CLUSTER_DOMAIN,
        # Pods with dnsPolicy Default get no resolver: the host's would lead off the machine.
        "resolvConf": "",
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.dir / "volume-plugins"),
        "serializeImagePulls": False,
        "rotateCertificates": False,
    }


def kubelet_arguments(
    paths: NodePaths,
    name: str,
    ip: str,
    labels: Mapping[str, str],
    taints: Sequence[Mapping[str, str]],
) -> list[str]:
    arguments = [
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={paths.kubeconfig}",
        f"--hostname-override={name}",
        f"--node-ip={ip}",
        f"--root-dir={paths.kubelet_root}",
        f"--cert-dir={paths.kubelet_certs}",
        "--v=1",
    ]
    if labels:
        arguments.append("--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    if taints:
        arguments.append(
            "--register-with-taints="
            + ",".join(f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in taints)
        )
    return arguments


def corefile(network: PodNetwork, kubeconfig: Path, health_port: int) -> str:
    """CoreDNS on the bridge's address, answering the cluster's names only: no forwarder, so a
    pod's query for any other name is refused here and never leaves the machine."""
    return f"""\
{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {network.gateway}
    errors
    health 127.0.0.1:{health_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {kubeconfig} sparsam-dev
        ttl 5
    }}
}}
"""
