"""The control plane's binaries: built from their published Go modules into a version-keyed cache.

Each tool has a Go module of ours under `gomod/<tool>/` (go.mod and go.sum, pinned and checked
in) that requires the upstream module and lists the binaries as `tool` directives. Building runs
`go build` on that module with GOTOOLCHAIN=local, so the only thing fetched is module source from
the Go module proxy. Results land in `<cache>/<tool>-<version>-<goos>-<goarch>/bin`, written to a
temporary folder and renamed into place, under a file lock, so two processes never build at once
and a half-built cache is never used.

Users without Go, or without the module proxy, point sparsam at binaries they have with
`SPARSAM_BIN_DIR` (or `--bin-dir`), or at a cluster they have with `--kubeconfig`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.lock import file_lock

GOMOD_ROOT: Final = Path(__file__).parent / "gomod"

KUBERNETES_VERSION: Final = "v1.35.4"
ETCD_VERSION: Final = "v3.6.16"
KWOK_VERSION: Final = "v0.8.0"
HELM_VERSION: Final = "v3.19.5"
COREDNS_VERSION: Final = "v1.15.0"


def _kube_version_ldflags(version: str) -> tuple[str, ...]:
    # Without these the binaries report v0.0.0-master, and kubectl warns about version skew.
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
        ]
    return tuple(flags)


@dataclass(frozen=True, slots=True)
class Tool:
    """One Go module of ours under gomod/, and the binaries it builds (name -> package).

    Two tools may share a module (`module`, default the tool's name) and still be cached apart:
    a binary added later then builds into its own folder, and the folders already in use by
    running clusters stay as they are.
    """

    name: str
    version: str
    binaries: Mapping[str, str]
    ldflags: tuple[str, ...] = ()
    module: str = ""

    @property
    def gomod(self) -> Path:
        return GOMOD_ROOT / (self.module or self.name)


KUBERNETES: Final = Tool(
    "kubernetes",
    KUBERNETES_VERSION,
    {
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    },
    _kube_version_ldflags(KUBERNETES_VERSION),
)
ETCD: Final = Tool("etcd", ETCD_VERSION, {"etcd": "go.etcd.io/etcd/server/v3"})
KWOK: Final = Tool("kwok", KWOK_VERSION, {"kwok": "sigs.k8s.io/kwok/cmd/kwok"})
HELM: Final = Tool(
    "helm",
    HELM_VERSION,
    {"helm": "helm.sh/helm/v3/cmd/helm"},
    (f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",),
)
TOOLS: Final = (ETCD, KUBERNETES, KWOK, HELM)
#: What real nodes add: a kubelet from the control plane's own module, and the cluster DNS.
KUBELET: Final = Tool(
    "kubelet",
    KUBERNETES_VERSION,
    {"kubelet": "k8s.io/kubernetes/cmd/kubelet"},
    _kube_version_ldflags(KUBERNETES_VERSION),
    module="kubernetes",
)
COREDNS: Final = Tool("coredns", COREDNS_VERSION, {"coredns": "github.com/coredns/coredns"})
REAL_NODE_TOOLS: Final = (KUBELET, COREDNS)

#: KWOK's own default stages (what `kwok` ships as "fast" nodes and pods), taken from the module.
KWOK_STAGES: Final = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
KWOK_STAGES_FILE: Final = "kwok-stages.yaml"

NO_GO_HINT: Final = (
    "set SPARSAM_BIN_DIR (or --bin-dir) to a folder with etcd, kube-apiserver, "
    "kube-controller-manager, kube-scheduler, kubectl and kwok (helm optional; kubelet and "
    "coredns for real nodes), "
    "or use an existing cluster with --kubeconfig"
)


def cache_root() -> Path:
    env = os.environ.get("SPARSAM_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparsam" / "tools"


def _platform() -> str:
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"{platform.system().lower()}-{machine}"


def tool_dir(tool: Tool) -> Path:
    return cache_root() / f"{tool.name}-{tool.version}-{_platform()}"


@dataclass(frozen=True, slots=True)
class Binaries:
    """Where each binary of the control plane is, and KWOK's stage configuration."""

    paths: Mapping[str, Path]
    kwok_stages: Path

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def _override_dir() -> Path | None:
    env = os.environ.get("SPARSAM_BIN_DIR")
    return Path(env) if env else None


def ensure_binaries(bin_dir: Path | None = None, tools: tuple[Tool, ...] = TOOLS) -> Binaries:
    """Return the binaries, building what the cache lacks. Raises DevClusterError, never more."""
    bin_dir = bin_dir or _override_dir()
    paths: dict[str, Path] = {}
    if bin_dir is not None:
        for tool in tools:
            for name in tool.binaries:
                path = bin_dir / name
                if tool is HELM and not path.exists():
                    continue  # the cluster runs without helm; only chart tests need it
                if not os.access(path, os.X_OK):
                    raise DevClusterError(f"{path} is missing or not executable ({NO_GO_HINT})")
                paths[name] = path
        # KWOK's stages are plain YAML: next to the binaries, or in our cache from a build.
        candidates = (bin_dir / KWOK_STAGES_FILE, tool_dir(KWOK) / "bin" / KWOK_STAGES_FILE)
        for stages in candidates:
            if stages.is_file() or KWOK not in tools:
                return Binaries(paths, stages)
        raise DevClusterError(
            f"{bin_dir / KWOK_STAGES_FILE} is missing: put KWOK's node and pod Stage objects "
            "there (kustomize/stage in the KWOK repository)"
        )
    for tool in tools:
        built = _build(tool)
        paths.update({name: built / name for name in tool.binaries})
    return Binaries(paths, tool_dir(KWOK) / "bin" / KWOK_STAGES_FILE)


def _is_built(tool: Tool, target: Path) -> bool:
    names = [*tool.binaries, *([KWOK_STAGES_FILE] if tool is KWOK else [])]
    return all((target / name).is_file() for name in names)


def _build(tool: Tool) -> Path:
    target = tool_dir(tool) / "bin"
    if _is_built(tool, target):
        return target
    go = shutil.which("go")
    if go is None:
        raise DevClusterError(f"the Go toolchain (go) is not on PATH: {NO_GO_HINT}")
    with file_lock(tool_dir(tool).parent / f"{tool.name}.lock"):
        if _is_built(tool, target):  # another process built it while we waited
            return target
        source = tool_dir(tool) / "src"
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(tool.gomod, source)
        staging = Path(tempfile.mkdtemp(prefix="bin-", dir=tool_dir(tool)))
        log = tool_dir(tool) / "build.log"
        ldflags = " ".join(("-s", "-w", *tool.ldflags))
        for name, package in tool.binaries.items():
            command = ["build", "-trimpath", "-ldflags", ldflags, "-o", str(staging / name)]
            _go(go, [*command, package], source, log, what=f"building {name} {tool.version}")
        if tool is KWOK:
            # KWOK's own default stages, from the module source the build just used.
            module = module_dir("sigs.k8s.io/kwok", tool.version, log)
            documents = [(module / stage).read_text().strip() for stage in KWOK_STAGES]
            (staging / KWOK_STAGES_FILE).write_text("\n---\n".join(documents) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def module_dir(module: str, version: str, log: Path) -> Path:
    """The source folder of a published Go module, downloaded through the module proxy into the
    Go module cache (read-only there: copy what you need out of it)."""
    go = shutil.which("go")
    if go is None:
        raise DevClusterError(f"the Go toolchain (go) is not on PATH: {NO_GO_HINT}")
    with tempfile.TemporaryDirectory(prefix="sparsam-gomod-") as scratch:
        Path(scratch, "go.mod").write_text("module sparsam.dev/scratch\n\ngo 1.25\n")
        found = _go(
            go,
            ["mod", "download", "-json", f"{module}@{version}"],
            Path(scratch),
            log,
            what=f"downloading {module}@{version}",
        )
    return Path(json.loads(found)["Dir"])


_UNREACHABLE = ("dial tcp", "no such host", "connection refused", "i/o timeout", "proxyconnect")


def _go(go: str, args: list[str], cwd: Path, log: Path, what: str) -> str:
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    done = subprocess.run(
        [go, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    with log.open("a") as handle:
        handle.write(f"$ go {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        # `go mod download -json` reports its failure in the JSON on stdout, not on stderr.
        text = done.stderr.strip() or _json_error(done.stdout) or "no output"
        last = text.splitlines()[-1]
        if any(sign in done.stderr for sign in _UNREACHABLE):
            raise DevClusterError(
                f"{what} failed: the Go module proxy is unreachable ({last}); {NO_GO_HINT}"
            )
        raise DevClusterError(f"{what} failed: {last} (log: {log})")
    return done.stdout


def _json_error(stdout: str) -> str:
    try:
        return str(json.loads(stdout).get("Error", ""))
    except ValueError:
        return ""
