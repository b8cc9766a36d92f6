"""The dev cluster's pure parts: certificates, node manifests, the binary cache's errors."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from sparsam.api import constants as c
from sparsam.devcluster import audit, nodes, pki, tools
from sparsam.devcluster.cluster import Process, State, alive
from sparsam.devcluster.errors import DevClusterError


def test_pki_certificates_chain_to_the_ca(tmp_path: Path) -> None:
    pki.generate(tmp_path)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    for name in ("apiserver", *(identity.file for identity in pki.IDENTITIES)):
        cert = x509.load_pem_x509_certificate((tmp_path / f"{name}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert (tmp_path / f"{name}.key").stat().st_mode & 0o077 == 0, "keys are private"
    # Python's own TLS stack accepts the pair (what the health checks use).
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    context.load_cert_chain(tmp_path / "admin.crt", tmp_path / "admin.key")


def test_pki_identities_match_bootstrap_rbac(tmp_path: Path) -> None:
    pki.generate(tmp_path)
    cert = x509.load_pem_x509_certificate((tmp_path / "scheduler.crt").read_bytes())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert names[0].value == "system:kube-scheduler"
    admin = x509.load_pem_x509_certificate((tmp_path / "admin.crt").read_bytes())
    groups = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [g.value for g in groups] == ["system:masters"]


def test_kubeconfig_embeds_everything(tmp_path: Path) -> None:
    pki.generate(tmp_path)
    path = tmp_path / "kubeconfig"
    pki.write_kubeconfig(path, tmp_path, pki.ADMIN, "https://127.0.0.1:6443")
    config = yaml.safe_load(path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert set(config["users"][0]["user"]) == {"client-certificate-data", "client-key-data"}
    assert path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("capacity", "taint_keys"),
    [(c.CAPACITY_SPOT, {c.TAINT_GPU, c.TAINT_SPOT}), (c.CAPACITY_ON_DEMAND, {c.TAINT_GPU})],
    ids=["spot", "on-demand"],
)
def test_gpu_node_labels_and_taints(capacity: str, taint_keys: set[str]) -> None:
    node = nodes.gpu_node("n", nodes.G5_12XLARGE, capacity)
    labels = node["metadata"]["labels"]
    assert labels[c.LABEL_CAPACITY_TYPE] == capacity
    assert labels[c.LABEL_INSTANCE_TYPE] == "g5.12xlarge"
    assert labels[c.LABEL_GPU_PRODUCT] == "NVIDIA-A10G"
    assert node["status"]["capacity"][c.GPU_RESOURCE] == "4"
    assert {t["key"] for t in node["spec"]["taints"]} == taint_keys
    assert node["metadata"]["annotations"] == nodes.KWOK_ANNOTATION


def test_default_fleet_has_spot_and_on_demand() -> None:
    fleet = nodes.default_fleet()
    kinds = {n["metadata"]["labels"][c.LABEL_CAPACITY_TYPE] for n in fleet}
    assert kinds == {c.CAPACITY_SPOT, c.CAPACITY_ON_DEMAND}
    assert len({n["metadata"]["name"] for n in fleet}) == len(fleet)


def test_missing_go_is_one_clear_sentence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPARSAM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SPARSAM_BIN_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DevClusterError) as info:
        tools.ensure_binaries()
    message = str(info.value)
    assert "Go toolchain" in message
    assert "SPARSAM_BIN_DIR" in message
    assert "--kubeconfig" in message
    assert "\n" not in message


def test_bin_dir_names_the_missing_binary(tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    with pytest.raises(DevClusterError, match="kube-apiserver is missing"):
        tools.ensure_binaries(tmp_path)


def test_cache_is_keyed_by_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPARSAM_CACHE_DIR", str(tmp_path))
    assert tools.tool_dir(tools.KUBERNETES).name.startswith(
        f"kubernetes-{tools.KUBERNETES_VERSION}-"
    )
    assert tools.tool_dir(tools.KUBERNETES).parent == tmp_path


def test_go_modules_pin_the_versions() -> None:
    for tool in (*tools.TOOLS, *tools.REAL_NODE_TOOLS):
        go_mod = (tool.gomod / "go.mod").read_text()
        assert (tool.gomod / "go.sum").is_file()
        upstream = next(iter(tool.binaries.values()))
        assert f"tool {upstream}" in go_mod or upstream in go_mod
        assert tool.version in go_mod


def test_state_round_trips_and_dead_pids_are_not_alive(tmp_path: Path) -> None:
    state = State("x", 6443, [Process("etcd", 2**22 + 7, 2379, "/nonexistent/etcd")])
    state.save(tmp_path / "state.json")
    assert State.load(tmp_path / "state.json") == state
    assert not alive(state.processes[0])
    assert State.load(tmp_path / "missing.json") is None


JOB = ("trainingjobs", "status")


def _audit_line(
    verb: str,
    name: str,
    code: int,
    at: str,
    stage: str = "ResponseComplete",
    resource: str = "pods",
    subresource: str | None = None,
) -> str:
    """An event as the apiserver writes it at level Metadata (fields we do not read left out)."""
    return json.dumps(
        {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "stage": stage,
            "verb": verb,
            "user": {"username": "sparsam-admin", "groups": ["system:masters"]},
            "objectRef": {
                "resource": resource,
                "namespace": "ns",
                "name": name,
                "apiVersion": "v1",
                **({"subresource": subresource} if subresource else {}),
            },
            "responseStatus": {"metadata": {}, "code": code},
            "requestReceivedTimestamp": "2026-12-03T04:02:38.565128Z",
            "stageTimestamp": at,
        }
    )


def test_audit_log_gives_each_objects_first_create_and_first_status(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text(
        "\n".join(
            [
                _audit_line("create", "a", 201, "2026-12-03T04:02:38.571624Z"),
                _audit_line("create", "a", 409, "2026-12-03T04:02:39.000000Z"),  # exists
                _audit_line("create", "b", 403, "2026-12-03T04:02:40.000000Z"),  # refused
                _audit_line("create", "c", 201, "2026-12-03T04:02:41.5Z", stage="Panic"),
                _audit_line("delete", "a", 200, "2026-12-03T04:02:42.000000Z"),
                _audit_line("create", "a", 201, "2026-12-03T04:02:43.000000Z"),  # a new one
                _audit_line("patch", "j", 404, "2026-12-03T04:02:44Z", "ResponseComplete", *JOB),
                _audit_line("patch", "j", 200, "2026-12-03T04:02:45Z", "ResponseComplete", *JOB),
                _audit_line("patch", "j", 200, "2026-12-03T04:02:46Z", "ResponseComplete", *JOB),
                '{"kind":"Event","stage":"ResponseComp',  # cut short by a rotation
            ]
        )
        + "\n"
    )
    writes = list(audit.read(log))
    assert [(w.verb, w.name, w.code) for w in writes] == [
        ("create", "a", 201),
        ("create", "a", 409),
        ("create", "b", 403),
        ("delete", "a", 200),
        ("create", "a", 201),
        ("patch", "j", 404),
        ("patch", "j", 200),
        ("patch", "j", 200),
    ]
    assert writes[0].user == "sparsam-admin"
    first = audit.created(writes, "pods")
    assert list(first) == [("ns", "a")]
    # The apiserver's time, to the microsecond.
    assert first["ns", "a"] == pytest.approx(1796270558.571624, abs=1e-6)
    assert audit.created(writes, "services") == {}
    assert audit.created(writes, "trainingjobs") == {}
    assert audit.first_status(writes, "trainingjobs") == {("ns", "j"): pytest.approx(1796270565.0)}
    assert list(audit.read(tmp_path / "absent.log")) == []
