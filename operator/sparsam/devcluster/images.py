"""sparsam's container images, built without a container engine into OCI image archives.

Each image is a few gzip layers, each cached under `~/.cache/sparsam/images/layers` and keyed by
what determines it, so a change rebuilds only its own layer:

- pause: Debian's static `catatonit` binary (pinned Debian version), run as `catatonit -P`.
- operator, trainer, trainer-cpu: a Debian base (debootstrap minbase + python3, slimmed; keyed
  by suite and package list), then the pinned Python dependencies (`images/*.requirements.txt`,
  keyed by the pinned list), then sparsam itself (keyed by a hash of its source). The sparsam
  layer is the same for every image, and is all a code change rebuilds.

Archives (`archives/<name>-<key>.tar`) are OCI image layouts that `ctr -n k8s.io images import`,
`skopeo copy oci-archive:...` and `podman load` read; see docs/images.md. Building the Debian
images needs root (debootstrap, chroot, an overlay mount); the pause image does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sparsam import __version__
from sparsam.devcluster import oci, rootfs
from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.lock import file_lock

REPO_ROOT: Final = Path(__file__).resolve().parents[3]
REQUIREMENTS_DIR: Final = REPO_ROOT / "images"
REGISTRY: Final = "ghcr.io/sparsam"

#: Debian bookworm's catatonit, pinned: the pause image's tag is its upstream version.
CATATONIT_DEB_VERSION: Final = "0.1.7-1+b2"
CATATONIT_VERSION: Final = CATATONIT_DEB_VERSION.split("-", 1)[0]

#: Pod Security "restricted" wants a numeric non-root user; the base image names it `nonroot`.
NONROOT: Final = f"{rootfs.NONROOT_UID}:{rootfs.NONROOT_UID}"

#: The wheels the GPU trainer has and trainer-cpu leaves out. PyPI's torch is one build, with
#: CUDA: its libraries link cudart, cublas, cudnn, nccl, cufft, curand, cusparse(Lt), cufile,
#: cupti, nvrtc and nvshmem, so `import torch` needs those wheels even on a machine without a
#: GPU. What it loads only on demand can go: triton (torch.compile's GPU kernels), cusolver
#: (CUDA linear algebra), nvtx, and the cuda-python bindings. torch then imports, trains and
#: quantizes on the CPU, with gloo. (PyTorch's CPU-only wheels live on download.pytorch.org,
#: not on PyPI.)
CPU_LEFT_OUT: Final = (
    "triton==",
    "cuda-bindings==",
    "cuda-pathfinder==",
    "cuda-toolkit==",
    "nvidia-cusolver==",
    "nvidia-nvtx==",
)

#: What our Dockerfiles get from python:3.11-slim and the builder sets itself.
BASE_ENV: Final = (
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("LANG", "C.UTF-8"),
)


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """What an image is, as data; the Dockerfiles under images/ say the same (a test checks)."""

    name: str
    ref: str
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    #: What pip installs of ours ("" for an image without Python).
    package: str = ""
    #: The pinned dependencies: a file under images/.
    requirements: str = ""
    #: Pinned packages left out (`name==`, as the requirements file spells the name).
    without: tuple[str, ...] = ()
    #: The Dockerfile under images/ that builds the same image with Docker ("" for none).
    dockerfile: str = ""


_TRAINER_ENV: Final = (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("PYTHONUNBUFFERED", "1"),
)
_TRAINER_CMD: Final = ("python", "-m", "sparsam_trainer", "--help")
#: The trainer's working folder: writable by any user (torch and transformers write caches).
_TRAINER_WORKDIR: Final = "/tmp"  # noqa: S108

IMAGES: Final[Mapping[str, ImageSpec]] = {
    "pause": ImageSpec(
        "pause",
        f"localhost/sparsam/pause:{CATATONIT_VERSION}",
        entrypoint=("/catatonit", "-P"),
    ),
    "operator": ImageSpec(
        "operator",
        f"{REGISTRY}/sparsam-operator:{__version__}",
        user=NONROOT,
        entrypoint=("sparsam",),
        cmd=("run",),
        package="sparsam",
        requirements="operator.requirements.txt",
        dockerfile="operator.Dockerfile",
    ),
    "trainer": ImageSpec(
        "trainer",
        f"{REGISTRY}/sparsam-trainer:{__version__}",
        user=NONROOT,
        cmd=_TRAINER_CMD,
        env=_TRAINER_ENV,
        workdir=_TRAINER_WORKDIR,
        package="sparsam[trainer]",
        requirements="trainer.requirements.txt",
        dockerfile="trainer.Dockerfile",
    ),
    "trainer-cpu": ImageSpec(
        "trainer-cpu",
        f"{REGISTRY}/sparsam-trainer:{__version__}-cpu",
        user=NONROOT,
        cmd=_TRAINER_CMD,
        env=_TRAINER_ENV,
        workdir=_TRAINER_WORKDIR,
        package="sparsam[trainer]",
        requirements="trainer.requirements.txt",
        without=CPU_LEFT_OUT,
        dockerfile="trainer.Dockerfile",
    ),
}


@dataclass(frozen=True, slots=True)
class ImageArchive:
    """An OCI image archive on disk, ready for `ctr images import` or `skopeo copy`."""

    name: str
    ref: str
    path: Path
    size_bytes: int
    #: Bytes of file content once unpacked (all layers together).
    unpacked_bytes: int
    #: The manifest's digest: what containerd lists as the image's digest.
    digest: str


def cache_root() -> Path:
    env = os.environ.get("SPARSAM_IMAGE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparsam" / "images"


def build_log() -> Path:
    return cache_root() / "build.log"


def ensure_image(name: str) -> ImageArchive:
    """The archive of image `name`, building what the cache lacks. Raises DevClusterError only."""
    spec = IMAGES.get(name)
    if spec is None:
        raise DevClusterError(f"no image named {name!r}: choose from {', '.join(IMAGES)}")
    try:
        return _ensure(spec)
    except OSError as exc:  # a full disk, an unwritable cache: the user's to fix
        raise DevClusterError(f"building the {name} image failed: {exc}") from exc


def _ensure(spec: ImageSpec) -> ImageArchive:
    if spec.name == "pause":
        layers = [_pause_layer()]
        labels = {"dev.sparsam.catatonit": CATATONIT_DEB_VERSION}
    else:
        pins = pinned(spec)
        base, base_layer = _base()
        layers = [base_layer, _dependencies_layer(base, spec, pins), _sparsam_layer(base)]
        labels = {
            "dev.sparsam.debian": f"{rootfs.DEBIAN_SUITE}: {' '.join(rootfs.DEBIAN_PACKAGES)}",
            "dev.sparsam.python-packages": " ".join([*pins, f"sparsam=={__version__}"]),
        }
    labels.update(
        {"org.opencontainers.image.title": f"sparsam-{spec.name}",
         "org.opencontainers.image.version": spec.ref.rsplit(":", 1)[1]}
    )  # fmt: skip
    env = {} if spec.name == "pause" else dict(BASE_ENV)
    env.update(spec.env)
    config = oci.image_config(
        layers,
        user=spec.user,
        entrypoint=spec.entrypoint,
        cmd=spec.cmd,
        env=env,
        workdir=spec.workdir,
        labels=labels,
    )
    return _archive(spec, layers, config)


def _archive(spec: ImageSpec, layers: list[oci.Layer], config: dict[str, object]) -> ImageArchive:
    key = _key(spec.ref, config, [layer.digest for layer in layers])
    folder = cache_root() / "archives"
    path = folder / f"{spec.name}-{key}.tar"
    meta = path.with_suffix(".json")
    with file_lock(folder / f"{spec.name}.lock"):
        if not (path.is_file() and meta.is_file()):
            staging = path.with_name(f".{path.name}.{os.getpid()}")
            try:
                digest = oci.write_archive(staging, layers, config, spec.ref)
                unpacked = sum(layer.unpacked_size for layer in layers)
                meta.write_text(json.dumps({"digest": digest, "unpacked_bytes": unpacked}))
                staging.rename(path)
            finally:
                staging.unlink(missing_ok=True)
        os.utime(path)  # in use: _prune keeps it
        _prune(folder, spec.name, keep=path)
    recorded = json.loads(meta.read_text())
    return ImageArchive(
        spec.name,
        spec.ref,
        path,
        path.stat().st_size,
        int(recorded["unpacked_bytes"]),
        str(recorded["digest"]),
    )


#: Another archive of the same image is removed once no one has asked for it for this long: a
#: few GB each for the trainer, yet another checkout (another source hash) may be importing it.
ARCHIVE_IDLE_S: Final = 3600


def _prune(folder: Path, name: str, keep: Path) -> None:
    now = time.time()
    for old in folder.glob(f"{name}-*.tar"):
        # `trainer-cpu-KEY.tar` also matches `trainer-*`: the key is what follows the name.
        if old == keep or "-" in old.name.removeprefix(f"{name}-"):
            continue
        if now - old.stat().st_mtime > ARCHIVE_IDLE_S:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)


def _key(*parts: object) -> str:
    return hashlib.sha256(oci.canonical_json(parts)).hexdigest()[:16]


def pinned(spec: ImageSpec) -> list[str]:
    """The image's pinned Python packages (`name==version`), sorted, exclusions applied."""
    path = REQUIREMENTS_DIR / spec.requirements
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DevClusterError(f"{path} is unreadable: {exc.strerror}") from exc
    pins = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line:
            raise DevClusterError(f"{path}: {line!r} is not pinned (name==version)")
        if not line.lower().startswith(spec.without):
            pins.append(line)
    return sorted(pins, key=str.lower)


def lock_requirements() -> list[Path]:
    """Rewrite the pinned requirements under images/: pyproject.toml's dependencies (the
    operator's; the trainer's with [trainer]) resolved by pip at the versions installed in the
    Python that runs this, so the images carry what the tests ran. Returns the files written."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = {
        "operator": (list(project["dependencies"]), "base dependencies"),
        "trainer": (
            [*project["dependencies"], *project["optional-dependencies"]["trainer"]],
            "base and [trainer] dependencies",
        ),
    }
    written = []
    with tempfile.TemporaryDirectory(prefix="sparsam-lock-") as scratch:
        constraints = Path(scratch, "installed.txt")
        constraints.write_text(
            run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], "pip freeze")
        )
        for name, (requirements, what) in wanted.items():
            inputs = Path(scratch, f"{name}.in")
            inputs.write_text("\n".join(requirements) + "\n")
            report = run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run",
                 "--ignore-installed", "--only-binary=:all:", "--report=-",
                 f"--constraint={constraints}", f"--requirement={inputs}"],
                f"resolving the {name} image's packages",
            )  # fmt: skip
            pins = sorted(
                (f"{item['metadata']['name']}=={item['metadata']['version']}"
                 for item in json.loads(report)["install"]),
                key=str.lower,
            )  # fmt: skip
            path = REQUIREMENTS_DIR / f"{name}.requirements.txt"
            path.write_text(
                f"# The Python packages of the {name} image, pinned: pip's resolution of "
                f"pyproject.toml's\n# {what}"
                + (
                    "\n# (trainer-cpu leaves out nvidia-*, cuda-* and triton)"
                    * (name != "operator")
                )
                + ". Regenerate with `sparsam images lock`.\n"
                + "".join(f"{pin}\n" for pin in pins)
            )
            written.append(path)
    return written


# --- layers -----------------------------------------------------------------------------------


def _cached_layer(stem: str, build: Callable[[Path], oci.Layer]) -> oci.Layer:
    """The layer `layers/<stem>.tar.gz`, built by `build(scratch)` under a lock if missing."""
    folder = cache_root() / "layers"
    blob = folder / f"{stem}.tar.gz"
    meta = folder / f"{stem}.json"
    if not (blob.is_file() and meta.is_file()):
        with file_lock(folder / f"{stem}.lock"):
            if not (blob.is_file() and meta.is_file()):
                for stale in folder.glob(f".{stem}-*"):  # a killed build's, under our lock
                    rootfs.remove_scratch(stale)
                scratch = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=folder))
                try:
                    layer = build(scratch)
                    layer.path.rename(blob)
                    staged = scratch / "layer.json"
                    staged.write_text(json.dumps(layer.to_json()))
                    staged.rename(meta)
                finally:
                    rootfs.remove_scratch(scratch)
    return oci.Layer.from_json(blob, json.loads(meta.read_text()))


def _pause_layer() -> oci.Layer:
    def build(scratch: Path) -> oci.Layer:
        _require("apt-get", "apt")
        _require("dpkg-deb", "dpkg")
        package = f"catatonit={CATATONIT_DEB_VERSION}"
        run(["apt-get", "download", package], f"downloading {package}", cwd=scratch)
        debs = list(scratch.glob("catatonit_*.deb"))
        if len(debs) != 1:
            raise DevClusterError(f"apt-get download {package} left no .deb in {scratch}")
        run(["dpkg-deb", "-x", str(debs[0]), str(scratch / "deb")], "unpacking catatonit")
        root = scratch / "root"
        root.mkdir()
        shutil.copyfile(scratch / "deb/usr/bin/catatonit", root / "catatonit")
        (root / "catatonit").chmod(0o755)
        return oci.write_layer(root, scratch / "layer.tar.gz", owner=(0, 0))

    return _cached_layer(f"pause-catatonit-{CATATONIT_DEB_VERSION}", build)


def _base() -> tuple[Path, oci.Layer]:
    """The Debian base: its root folder (for the layers above to chroot into) and its layer."""
    key = _key(rootfs.DEBIAN_SUITE, rootfs.DEBIAN_PACKAGES, rootfs.RECIPE)
    stem = f"base-{rootfs.DEBIAN_SUITE}-{key}"
    folder = cache_root() / "rootfs" / stem

    def build(scratch: Path) -> oci.Layer:
        _require_root("the Debian base image")
        _require("debootstrap", "debootstrap")
        with file_lock(folder.with_suffix(".lock")):
            if not folder.is_dir():
                for stale in folder.parent.glob(f".{stem}.*"):  # a killed build's
                    rootfs.remove_scratch(stale)
                staging = folder.with_name(f".{stem}.{os.getpid()}")
                try:
                    rootfs.build_base(staging, rootfs.debian_mirror(), run)
                    staging.rename(folder)
                finally:
                    rootfs.remove_scratch(staging)
        return oci.write_layer(folder, scratch / "layer.tar.gz")

    layer = _cached_layer(stem, build)
    if not folder.is_dir():  # the layer was cached but its root folder was cleaned away
        (cache_root() / "layers" / f"{stem}.json").unlink()
        layer = _cached_layer(stem, build)
    return folder, layer


def _dependencies_layer(base: Path, spec: ImageSpec, pins: list[str]) -> oci.Layer:
    stem = f"deps-{_key(base.name, pins)}"

    def build(scratch: Path) -> oci.Layer:
        _require_root(f"the {spec.name} image")
        wheels = cache_root() / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        requirements = scratch / "requirements.txt"
        requirements.write_text("\n".join(pins) + "\n")
        run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--only-binary=:all:", "--implementation=cp", "--python-version=3.11",
             *(f"--platform={tag}" for tag in rootfs.WHEEL_PLATFORMS), "--dest", str(wheels),
             "--requirement", str(requirements)],
            f"downloading the {spec.name} image's wheels from PyPI",
        )  # fmt: skip
        return rootfs.pip_layer(base, wheels, pins, scratch, run)

    return _cached_layer(stem, build)


def _sparsam_layer(base: Path) -> oci.Layer:
    sources = _sparsam_sources()
    stem = f"sparsam-{__version__}-{_key(base.name, _hash_files(sources))}"

    def build(scratch: Path) -> oci.Layer:
        _require_root("sparsam's layer")
        source = scratch / "src"
        for relative in sources:
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO_ROOT / relative, source / relative)
        wheels = scratch / "wheels"
        run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(source)],
            "building sparsam's wheel",
        )  # fmt: skip
        return rootfs.pip_layer(base, wheels, [f"sparsam=={__version__}"], scratch, run)

    return _cached_layer(stem, build)


def _sparsam_sources() -> list[str]:
    """What sparsam's wheel is built from, relative to the repository root."""
    files = ["pyproject.toml", "README.md"]
    for package in ("operator/sparsam", "trainer/sparsam_trainer"):
        for path in sorted((REPO_ROOT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append(path.relative_to(REPO_ROOT).as_posix())
    return files


def _hash_files(relatives: list[str]) -> str:
    digest = hashlib.sha256()
    for relative in relatives:
        digest.update(relative.encode() + b"\0")
        digest.update((REPO_ROOT / relative).read_bytes())
    return digest.hexdigest()


# --- commands ---------------------------------------------------------------------------------


def run(
    command: list[str],
    what: str,
    cwd: Path | None = None,
    root: Path | None = None,
    ok: tuple[int, ...] = (0,),
) -> str:
    """Run `command` (in a chroot of `root` if given), logging to the build log; raise
    DevClusterError with its last line of output if it exits with a status not in `ok`."""
    log = build_log()
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    if root is not None:
        command = ["chroot", str(root), *command]
        env = {"PATH": dict(BASE_ENV)["PATH"], "LANG": "C.UTF-8", "HOME": "/root"}
    try:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise DevClusterError(f"{what} failed: {exc}") from exc
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    if done.returncode not in ok:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        raise DevClusterError(f"{what} failed: {lines[-1]} (log: {log})")
    return done.stdout


def _require(command: str, package: str) -> None:
    if shutil.which(command) is None:
        raise DevClusterError(
            f"{command} is not installed: `make container-tools` installs it "
            f"(apt-get install {package})"
        )


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise DevClusterError(
            f"building {what} needs root (debootstrap, chroot and an overlay mount); "
            "run `sparsam images build` as root, or build it with Docker from images/"
        )
