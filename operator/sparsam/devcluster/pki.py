"""The dev cluster's certificates: a fresh CA, the apiserver's serving cert, client identities.

Each component gets its own client certificate, with the common name and group that Kubernetes'
bootstrap RBAC roles expect (system:kube-controller-manager, system:kube-scheduler), so RBAC
authorization is on for real and every component is held to its own role.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The first address of the service range; in-cluster clients reach the apiserver there.
SERVICE_CIDR: Final = "10.96.0.0/16"
KUBERNETES_SERVICE_IP: Final = "10.96.0.1"
_VALIDITY: Final = datetime.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class Identity:
    """A client certificate's subject: user name and groups, as RBAC sees them."""

    file: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN: Final = Identity("admin", "sparsam-admin", ("system:masters",))
CONTROLLER_MANAGER: Final = Identity("controller-manager", "system:kube-controller-manager")
SCHEDULER: Final = Identity("scheduler", "system:kube-scheduler")
# KWOK plays every kubelet at once; it acts on all nodes and pods, so it runs as an admin.
KWOK: Final = Identity("kwok", "sparsam-kwok", ("system:masters",))
IDENTITIES: Final = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK)
#: The apiserver's client identity towards kubelets (`kubectl logs/exec` on a real node).
KUBELET_CLIENT: Final = Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client")
#: The group the Node authorizer and the bootstrap RBAC roles know kubelets by.
NODES_GROUP: Final = "system:nodes"


def node_identity(node: str) -> Identity:
    """A kubelet's identity: the Node authorizer lets it touch only its own Node and pods."""
    return Identity(f"node-{node}", f"system:node:{node}", (NODES_GROUP,))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    path.write_bytes(data)
    if secret:
        path.chmod(0o600)


def _name(common: str, groups: tuple[str, ...] = ()) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
    return x509.Name([*parts, x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _signed(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    signing_key: ec.EllipticCurvePrivateKey,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def generate(pki: Path) -> None:
    """Write a CA, serving and client certificates, and the service-account key pair to `pki`."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("sparsam-dev-cluster-ca")
    ca = _signed(
        ca_name,
        ca_key.public_key(),
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
        ],
    )
    _write(pki / "ca.crt", _pem_cert(ca))
    _write(pki / "ca.key", _pem_key(ca_key), secret=True)

    server_key = _key()
    names: list[x509.GeneralName] = [
        x509.DNSName(name)
        for name in (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    names += [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", KUBERNETES_SERVICE_IP)
    ]
    server = _signed(
        _name("kube-apiserver"),
        server_key.public_key(),
        ca_name,
        ca_key,
        [
            (x509.SubjectAlternativeName(names), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
    )
    _write(pki / "apiserver.crt", _pem_cert(server))
    _write(pki / "apiserver.key", _pem_key(server_key), secret=True)

    for identity in (*IDENTITIES, KUBELET_CLIENT):
        _issue_client(pki, identity, ca_name, ca_key)

    sa_key = _key()
    _write(pki / "sa.key", _pem_key(sa_key), secret=True)
    _write(
        pki / "sa.pub",
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def _issue_client(
    pki: Path, identity: Identity, ca_name: x509.Name, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    key = _key()
    cert = _signed(
        _name(identity.user, identity.groups),
        key.public_key(),
        ca_name,
        ca_key,
        [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)],
    )
    _write(pki / f"{identity.file}.crt", _pem_cert(cert))
    _write(pki / f"{identity.file}.key", _pem_key(key), secret=True)


def issue_client(pki: Path, identity: Identity) -> None:
    """Sign a client certificate for `identity` with the CA that `generate` wrote to `pki`."""
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki / 'ca.key'} is not an EC key")
    _issue_client(pki, identity, ca.subject, ca_key)


def write_kubeconfig(path: Path, pki: Path, identity: Identity, server: str) -> None:
    """A self-contained kubeconfig (certificates embedded) for `identity` at `server`."""

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sparsam-dev",
                "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
            }
        ],
        "users": [
            {
                "name": identity.user,
                "user": {
                    "client-certificate-data": b64(f"{identity.file}.crt"),
                    "client-key-data": b64(f"{identity.file}.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "sparsam-dev",
                "context": {
                    "cluster": "sparsam-dev",
                    "user": identity.user,
                    "namespace": "default",
                },
            }
        ],
        "current-context": "sparsam-dev",
    }
    _write(path, yaml.safe_dump(config, sort_keys=False).encode(), secret=True)
