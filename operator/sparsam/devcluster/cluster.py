"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, controller-manager,
scheduler and KWOK as local processes, like controller-runtime's envtest plus KWOK.

A cluster lives in one state folder: its certificates (pki/), kubeconfigs, etcd's data, one log
file per component (logs/), the apiserver's audit log of workload writes (logs/audit.log) and
`state.json`, which records each process and its ports so that `down` and `status` find them
from another process. Every component binds 127.0.0.1 only, on ports picked free at `up`, so
several clusters (a demo and a test session) can run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from sparsam.api import constants as c
from sparsam.devcluster import hostops, pki, realnodes
from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.lock import file_lock
from sparsam.devcluster.nodeconfig import PodNetwork
from sparsam.devcluster.processes import STOP_TIMEOUT as STOP_TIMEOUT
from sparsam.devcluster.processes import Process as Process
from sparsam.devcluster.processes import Supervision, arm, spawn, stop, tail
from sparsam.devcluster.processes import alive as alive
from sparsam.devcluster.processes import free_port as free_port
from sparsam.devcluster.realnodes import RealNode
from sparsam.devcluster.tools import Binaries

DEFAULT_NAME: Final = "sparsam"
#: Pod IPs come from a loopback range, so a host process listening there is the "pod".
POD_CIDR: Final = "127.1.0.0/16"
#: The order components start in; `down` stops them in reverse.
COMPONENTS: Final = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
START_TIMEOUT: Final = 60.0
#: The apiserver records who created or deleted which workload object, and who wrote the
#: status of ours, and when (to the microsecond, on the apiserver's clock): how a test finds who
#: removed a pod, and how `benchmarks/operator_scale.py` times a pod's creation apart from its
#: watch's delivery, and a job's first status. Nothing else: it costs the apiserver next to
#: nothing.
AUDIT_POLICY: Final = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create", "delete", "deletecollection"]
  resources:
  - group: ""
    resources: ["pods", "services"]
  - group: "{c.GROUP}"
    resources: ["{c.TRAINING_JOB.plural}", "{c.INFERENCE_SERVICE.plural}"]
- level: Metadata
  verbs: ["patch", "update"]
  resources:
  - group: "{c.GROUP}"
    resources: ["{c.TRAINING_JOB.plural}/status", "{c.INFERENCE_SERVICE.plural}/status"]
- level: None
"""


def state_root() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sparsam" / "dev-clusters"


@dataclass(slots=True)
class State:
    """What `up` started, saved as state.json in the cluster's folder."""

    name: str
    apiserver_port: int
    processes: list[Process] = field(default_factory=list)
    network: PodNetwork | None = None
    real_nodes: list[RealNode] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        network = raw.get("network")
        return cls(
            name=raw["name"],
            apiserver_port=raw["apiserver_port"],
            processes=[Process(**p) for p in raw["processes"]],
            network=PodNetwork(**network) if network else None,
            real_nodes=[RealNode(**n) for n in raw.get("real_nodes", [])],
        )


class DevCluster:
    """One named dev cluster. `up` is idempotent: a running cluster is left as it is."""

    def __init__(self, name: str = DEFAULT_NAME, root: Path | None = None) -> None:
        self.name = name
        self.dir = (root or state_root()) / name
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.audit_log = self.logs / "audit.log"
        self.state_file = self.dir / "state.json"
        self.kubeconfig = self.dir / "kubeconfig"

    # --- queries ----------------------------------------------------------------------

    def state(self) -> State | None:
        return State.load(self.state_file)

    def status(self) -> dict[str, bool]:
        """Each component and whether its process is alive (empty when never started)."""
        state = self.state()
        if state is None:
            return {}
        return {p.name: alive(p) for p in state.processes}

    def record(self, name: str) -> Path:
        """Where the supervisor of component `name` keeps its record."""
        return self.dir / "supervision" / f"{name.replace('/', '-')}.json"

    def supervision(self, process: Process) -> Supervision | None:
        """What `process`'s supervisor recorded (None for one that runs unsupervised)."""
        return Supervision.load(self.record(process.name)) if process.supervised else None

    def running(self) -> bool:
        """The control plane is up (real nodes, if any, are looked after on their own)."""
        status = self.status()
        return all(status.get(component, False) for component in COMPONENTS)

    # --- up ---------------------------------------------------------------------------

    def up(self, binaries: Binaries, timeout: float = START_TIMEOUT) -> State:
        with file_lock(self.dir.parent / f"{self.name}.lock"):
            return self._up(binaries, timeout)

    def _up(self, binaries: Binaries, timeout: float) -> State:
        if self.running():
            state = self.state()
            assert state is not None
            return state
        self._down(STOP_TIMEOUT)  # whatever half of a cluster a crash left goes first
        hostops.unmount_under(self.dir)  # never delete through a mount a crash left behind
        shutil.rmtree(self.dir, ignore_errors=True)
        self.logs.mkdir(parents=True)
        (self.dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        pki.generate(self.pki)
        state = State(self.name, apiserver_port=free_port())
        server = f"https://127.0.0.1:{state.apiserver_port}"
        for identity in pki.IDENTITIES:
            pki.write_kubeconfig(
                self.dir / f"{identity.file}.kubeconfig", self.pki, identity, server
            )
        (self.dir / f"{pki.ADMIN.file}.kubeconfig").replace(self.kubeconfig)
        try:
            for component in COMPONENTS:
                self._start(component, binaries, state, timeout)
        except DevClusterError:
            self._down(STOP_TIMEOUT)
            raise
        return state

    def _start(self, component: str, binaries: Binaries, state: State, timeout: float) -> None:
        port = state.apiserver_port if component == "kube-apiserver" else free_port()
        args = self._arguments(component, port, state, binaries)
        popen, process = spawn(
            component,
            [str(binaries[component]), *args],
            port,
            self.logs / f"{component}.log",
            self.record(component),
            self.dir,
        )
        state.processes.append(process)
        state.save(self.state_file)
        self._wait_healthy(process, popen, timeout)
        arm(popen)

    def _arguments(self, component: str, port: int, state: State, binaries: Binaries) -> list[str]:
        p = self.pki
        etcd = next((x for x in state.processes if x.name == "etcd"), None)
        if component == "etcd":
            peer = free_port()
            return [
                "--name=sparsam-dev",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{port}",
                f"--advertise-client-urls=http://127.0.0.1:{port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=sparsam-dev=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # a throwaway cluster: speed over durability
                "--quota-backend-bytes=1073741824",
                "--log-level=warn",
            ]
        if component == "kube-apiserver":
            assert etcd is not None
            return [
                f"--etcd-servers=http://127.0.0.1:{etcd.port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={p}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={pki.SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # Real nodes: the apiserver calls a kubelet (logs, exec) at the node's
                # InternalIP, on loopback, as a client of our CA.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={p / f'{pki.KUBELET_CLIENT.file}.crt'}",
                f"--kubelet-client-key={p / f'{pki.KUBELET_CLIENT.file}.key'}",
                # A handful of local clients: APF's queues cost memory and buy nothing here.
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
                f"--audit-policy-file={self.dir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=100",  # MB, then one older file is kept
                "--audit-log-maxbackup=1",
            ]
        kubeconfig = {
            "kube-controller-manager": pki.CONTROLLER_MANAGER,
            "kube-scheduler": pki.SCHEDULER,
            "kwok": pki.KWOK,
        }[component]
        config = str(self.dir / f"{kubeconfig.file}.kubeconfig")
        # The controller-manager and scheduler: one identity for API calls and for checking
        # callers of their own /healthz, loopback only, a single instance (no leader election).
        control_loop = [
            f"--kubeconfig={config}",
            f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]
        if component == "kube-controller-manager":
            return [
                *control_loop,
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={pki.SERVICE_CIDR}",
                # KWOK hands out pod IPs; nothing here allocates node CIDRs.
                "--allocate-node-cidrs=false",
            ]
        if component == "kube-scheduler":
            return control_loop
        return [  # kwok
            f"--kubeconfig={config}",
            f"--config={binaries.kwok_stages}",
            # Only nodes we mark as fake: a real node joined to this cluster is left alone.
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{port}",
        ]

    def _health_url(self, process: Process) -> tuple[str, ssl.SSLContext | None]:
        if process.name == "etcd":
            return f"http://127.0.0.1:{process.port}/health", None
        if process.name == "kwok":
            return f"http://127.0.0.1:{process.port}/healthz", None
        if process.name == "kube-apiserver":
            context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
            context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
            return f"https://127.0.0.1:{process.port}/readyz", context
        # The controller-manager and scheduler serve /healthz with a self-signed certificate.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return f"https://127.0.0.1:{process.port}/healthz", context

    def _wait_healthy(
        self, process: Process, popen: subprocess.Popen[bytes], timeout: float
    ) -> None:
        url, context = self._health_url(process)
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise DevClusterError(
                    f"{process.name} exited with code {popen.returncode}: "
                    f"{tail(self.logs / f'{process.name}.log')} "
                    f"(log: {self.logs / f'{process.name}.log'})"
                )
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise DevClusterError(
            f"{process.name} was not healthy within {timeout:.0f}s ({last}); "
            f"log: {self.logs / f'{process.name}.log'}"
        )

    # --- down -------------------------------------------------------------------------

    def down(self, timeout: float = STOP_TIMEOUT) -> list[Process]:
        """Stop every process of the cluster, newest first; return those that were running.

        One at a time: the apiserver shuts down gracefully only while etcd still answers.
        """
        with file_lock(self.dir.parent / f"{self.name}.lock"):
            return self._down(timeout)

    def _down(self, timeout: float) -> list[Process]:
        state = self.state()
        if state is None:
            return []
        # Real nodes first: their containers, mounts and network go with them.
        stopped = realnodes.teardown_all(state) if state.network or state.real_nodes else []
        state.save(self.state_file)
        control_plane = [p for p in reversed(state.processes) if alive(p)]
        for process in control_plane:
            stop(process, timeout=timeout)
        stopped += control_plane
        survivors = [p.name for p in stopped if alive(p)]
        if survivors:
            raise DevClusterError(f"could not stop {', '.join(survivors)}")
        state.processes = []
        state.save(self.state_file)
        return stopped


def kubectl_runner(kubectl: Path, kubeconfig: Path) -> Callable[..., str]:
    """A small kubectl caller for setup steps; raises DevClusterError with kubectl's message."""

    def run(*args: str, input: str | None = None, timeout: float = 120) -> str:
        try:
            done = subprocess.run(
                [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DevClusterError(f"kubectl {' '.join(args)} took over {timeout:.0f}s") from None
        if done.returncode != 0:
            raise DevClusterError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    return run
