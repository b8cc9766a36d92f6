"""Real nodes' pure parts: addresses, the pod network, and the files the kubelet, containerd,
CNI and CoreDNS are started with; argument checks that run before anything starts."""

from __future__ import annotations

import io
import ipaddress
import json
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from sparsam import cli
from sparsam.api import constants as c
from sparsam.devcluster import nodeconfig, pki, realnodes
from sparsam.devcluster.cluster import Process, State
from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.nodeconfig import NodePaths

NETWORK = nodeconfig.pod_network("demo", ipaddress.IPv4Network("10.250.16.0/20"))


def test_subnets_avoid_what_the_host_routes() -> None:
    host = [ipaddress.IPv4Network("192.0.2.0/24"), ipaddress.IPv4Network("10.250.0.0/20")]
    assert nodeconfig.free_subnet(host) == ipaddress.IPv4Network("10.250.16.0/20")
    assert nodeconfig.free_subnet([]) == ipaddress.IPv4Network("10.250.0.0/20")
    with pytest.raises(DevClusterError, match="no free /20"):
        nodeconfig.free_subnet([ipaddress.IPv4Network("10.0.0.0/8")])


def test_bridge_name_fits_an_interface_name_and_follows_the_subnet() -> None:
    assert NETWORK.bridge == "sparsam-br1"
    last = nodeconfig.pod_network("x", ipaddress.IPv4Network("10.250.240.0/20"))
    assert last.bridge == "sparsam-br15" and len(last.bridge) <= 15


def test_node_addresses_and_pod_ranges_never_overlap() -> None:
    assert NETWORK.gateway == "10.250.16.1"
    ranges = [NETWORK.pod_range(slot) for slot in range(nodeconfig.MAX_REAL_NODES)]
    assert ranges[0] == ("10.250.17.1", "10.250.17.254")
    assert ranges[-1] == ("10.250.24.1", "10.250.24.254")
    node_ips = {ipaddress.IPv4Address(NETWORK.node_ip(s)) for s in range(8)}
    for start, end in ranges:
        first, last = ipaddress.IPv4Address(start), ipaddress.IPv4Address(end)
        assert first in NETWORK.network and last in NETWORK.network
        assert not any(first <= ip <= last for ip in node_ips)
        assert not first <= ipaddress.IPv4Address(NETWORK.gateway) <= last
    assert NETWORK.node_ip(0) == "10.250.16.10"
    with pytest.raises(DevClusterError):
        NETWORK.pod_range(nodeconfig.MAX_REAL_NODES)


def test_slots_are_reused_lowest_first() -> None:
    assert nodeconfig.free_slot([]) == 0
    assert nodeconfig.free_slot([0, 2]) == 1
    with pytest.raises(DevClusterError, match="already has 8"):
        nodeconfig.free_slot(range(8))


@pytest.mark.parametrize("count", [0, -1, 9])
def test_real_node_count_is_checked(count: int) -> None:
    with pytest.raises(DevClusterError, match="--real-nodes"):
        nodeconfig.check_count(count)


@pytest.mark.parametrize("name", ["", "Real-0", "-a", "a-", "a_b", "a" * 41, "a/b"])
def test_bad_node_names_are_refused(name: str) -> None:
    with pytest.raises(DevClusterError, match="node name"):
        nodeconfig.check_node_name(name)


def test_cni_config_keeps_pods_on_the_bridge(tmp_path: Path) -> None:
    conf = nodeconfig.cni_conflist(NETWORK, 2, tmp_path / "ipam")
    (bridge,) = conf["plugins"]  # no portmap, no firewall plugin: nothing touches iptables
    assert bridge["type"] == "bridge" and bridge["bridge"] == NETWORK.bridge
    assert bridge["isGateway"] is False and bridge["isDefaultGateway"] is False
    assert bridge["ipMasq"] is False
    ipam = bridge["ipam"]
    assert ipam["routes"] == []  # no default route in a pod
    assert ipam["dataDir"] == str(tmp_path / "ipam")
    (range_,) = ipam["ranges"][0]
    assert (range_["rangeStart"], range_["rangeEnd"]) == NETWORK.pod_range(2)
    assert range_["subnet"] == NETWORK.subnet
    json.dumps(conf)  # what containerd reads


def test_containerd_config_is_per_node(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path / "n0")
    config = tomllib.loads(nodeconfig.containerd_config(paths, "localhost/sparsam/pause:1"))
    assert config["version"] == 2
    assert config["root"] == str(paths.containerd_root)
    assert config["state"] == str(paths.containerd_state)
    assert config["grpc"]["address"] == str(paths.socket)
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "localhost/sparsam/pause:1"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["cni"]["conf_dir"] == str(paths.cni_conf_dir)
    options = cri["containerd"]["runtimes"]["runc"]["options"]
    assert options["Root"] == str(paths.runc_root)  # its containers are found by node
    assert "io.containerd.internal.v1.opt" in config["disabled_plugins"]


def test_kubelet_config_for_one_of_several_kubelets(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path / "n0")
    ports = nodeconfig.KubeletPorts(41000, 41001)
    config = nodeconfig.kubelet_config(paths, "10.250.16.10", ports, tmp_path / "ca.crt", NETWORK)
    assert config["address"] == "10.250.16.10"
    assert (config["port"], config["healthzPort"], config["readOnlyPort"]) == (41000, 41001, 0)
    assert config["containerRuntimeEndpoint"] == f"unix://{paths.socket}"
    assert config["failCgroupV1"] is False and config["cgroupsPerQOS"] is False
    assert config["makeIPTablesUtilChains"] is False
    assert config["clusterDNS"] == [NETWORK.gateway]
    assert config["clusterDomain"] == "cluster.local"
    assert config["resolvConf"] == ""
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authentication"]["x509"]["clientCAFile"] == str(tmp_path / "ca.crt")
    assert config["podLogsDir"].startswith(str(paths.dir))
    assert config["imageGCHighThresholdPercent"] == 100


def test_kubelet_registers_with_the_gpu_labels_and_taints(tmp_path: Path) -> None:
    spec = realnodes.NodeSpec("g", "g5.12xlarge", c.CAPACITY_SPOT)
    arguments = nodeconfig.kubelet_arguments(
        NodePaths(tmp_path), "g", "10.250.16.10", spec.labels(), spec.taints()
    )
    labels = next(a for a in arguments if a.startswith("--node-labels="))
    assert f"{c.LABEL_GPU_PRODUCT}=NVIDIA-A10G" in labels
    assert f"{c.LABEL_CAPACITY_TYPE}=spot" in labels
    taints = next(a for a in arguments if a.startswith("--register-with-taints="))
    assert taints == (
        f"--register-with-taints={c.TAINT_GPU}=present:NoSchedule,{c.TAINT_SPOT}=spot:NoSchedule"
    )
    cpu = realnodes.NodeSpec("c")
    assert cpu.taints() == []
    assert c.LABEL_GPU_PRODUCT not in cpu.labels()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (realnodes.NodeSpec("x", gpu="p5.huge"), "--gpu"),
        (realnodes.NodeSpec("x", capacity_type="reserved"), "--capacity-type"),
        (realnodes.NodeSpec("X"), "node name"),
    ],
)
def test_node_specs_are_checked(spec: realnodes.NodeSpec, message: str) -> None:
    with pytest.raises(DevClusterError, match=message):
        spec.check()


def test_corefile_answers_the_cluster_only(tmp_path: Path) -> None:
    text = nodeconfig.corefile(NETWORK, tmp_path / "kubeconfig", 41002)
    assert f"bind {NETWORK.gateway}" in text
    assert f"kubeconfig {tmp_path / 'kubeconfig'}" in text
    assert "health 127.0.0.1:41002" in text
    assert "forward" not in text  # nothing is sent off the machine


def test_node_certificate_is_the_node_authorizers_identity(tmp_path: Path) -> None:
    pki.generate(tmp_path)
    identity = pki.node_identity("real-0")
    pki.issue_client(tmp_path, identity)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / f"{identity.file}.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "system:node:real-0"
    )
    groups = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [g.value for g in groups] == ["system:nodes"]


def test_state_with_real_nodes_round_trips(tmp_path: Path) -> None:
    node = realnodes.RealNode("real-0", 0, "10.250.16.10", str(tmp_path / "n"), "g6e.xlarge")
    state = State(
        "x",
        6443,
        [Process("kubelet/real-0", 2**22 + 9, 1, "/x/kubelet")],
        network=NETWORK,
        real_nodes=[node],
    )
    state.save(tmp_path / "state.json")
    assert State.load(tmp_path / "state.json") == state
    old = {"name": "x", "apiserver_port": 1, "processes": []}  # before real nodes existed
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = State.load(tmp_path / "old.json")
    assert loaded is not None and loaded.network is None and loaded.real_nodes == []


@dataclass(frozen=True)
class _Archive:
    ref: str
    path: Path


def _archive(path: Path, index: object) -> _Archive:
    with tarfile.open(path, "w") as tar:
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return _Archive("localhost/x:1", path)


def test_image_archives_are_checked_before_anything_starts(tmp_path: Path) -> None:
    good = {"manifests": [{"annotations": {"io.containerd.image.name": "localhost/x:1"}}]}
    realnodes.check_archive(_archive(tmp_path / "good.tar", good))
    with pytest.raises(DevClusterError, match="does not hold localhost/x:1"):
        realnodes.check_archive(_archive(tmp_path / "other.tar", {"manifests": []}))
    (tmp_path / "corrupt.tar").write_bytes(b"not a tar")
    with pytest.raises(DevClusterError, match="missing or not an OCI archive"):
        realnodes.check_archive(_Archive("localhost/x:1", tmp_path / "corrupt.tar"))
    with pytest.raises(DevClusterError, match="missing or not an OCI archive"):
        realnodes.check_archive(_Archive("localhost/x:1", tmp_path / "absent.tar"))


def test_cli_refuses_a_bad_real_node_count_before_starting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert cli.main(["dev-cluster", "up", "--name", "t", "--real-nodes", "9"]) == 1
    assert "--real-nodes 9: expected 1 to 8" in capsys.readouterr().err
    assert not (tmp_path / "sparsam" / "dev-clusters" / "t").exists()


def test_a_machine_without_containerd_is_told_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(realnodes.os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        DevClusterError, match=r"containerd is not on PATH: run `make container-tools`"
    ):
        realnodes.preflight([])
