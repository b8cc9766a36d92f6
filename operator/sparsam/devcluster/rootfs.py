"""Root filesystems for the Debian-based images: a debootstrap base, and pip layers above it.

The base is Debian's minbase variant plus python3 (Debian's 3.11 in bookworm), slimmed of what
a container never reads (apt lists and caches, docs, man pages, translations, logs, the build
machine's /etc/hosts and resolv.conf), with a `nonroot` user 65532 and hash-based .pyc files
(the layers' fixed mtimes would make mtime-based ones stale, and a non-root container could not
rewrite them).

A pip layer is what `pip install` adds to the base, run by the image's own python3 in a chroot:
an overlay mount over the base whose upper folder, once pip is done, is exactly the layer. Pip
itself is not in the image: the builder's pip is bind-mounted in for the install only. Each pip
layer sits on the base alone (its packages are installed with --no-deps, from pinned wheels), so
the dependencies' layer and sparsam's layer build and cache independently.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Protocol

from sparsam.devcluster import oci
from sparsam.devcluster.errors import DevClusterError

DEBIAN_SUITE: Final = "bookworm"
#: python-is-python3 is Debian's `python` command (the trainer's pods run `python -m ...`).
DEBIAN_PACKAGES: Final = ("python3", "python-is-python3")
#: Bumped whenever build_base changes what it makes, so cached bases are rebuilt.
RECIPE: Final = 1
PYTHON_SITE: Final = "usr/local/lib/python3.11/dist-packages"
#: The wheels bookworm (glibc 2.36, x86_64) runs: pip matches platform tags literally, so every
#: manylinux tag up to 2.36 is named, with the legacy aliases some wheels carry alone.
WHEEL_PLATFORMS: Final = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
NONROOT_UID: Final = 65532

#: Removed from the base: what only apt, man or a build machine reads.
_SLIM: Final = (
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf",
    "var/cache/ldconfig",
    "var/log",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/common-licenses",
    "dev",
    "proc",
    "sys",
    "tmp",
    "run",
    "var/tmp",
)
#: Files debootstrap copies from (or makes for) the build machine; the runtime provides its own.
_HOST_FILES: Final = ("etc/hosts", "etc/resolv.conf", "etc/hostname", "etc/machine-id")
#: Left out of pip layers: scratch space and the bind mounts' mount points.
_SCRATCH: Final = ("tmp/", "root/", "dev/", "proc/", "sys/", "run/", "var/cache/", "var/log/")


class Runner(Protocol):
    def __call__(
        self,
        command: list[str],
        what: str,
        cwd: Path | None = None,
        root: Path | None = None,
        ok: tuple[int, ...] = (0,),
    ) -> str: ...


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (SPARSAM_DEBIAN_MIRROR overrides)."""
    override = os.environ.get("SPARSAM_DEBIAN_MIRROR")
    if override:
        return override
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for stanza in re.split(r"\n\s*\n", _read(path)):
            lines = [line for line in stanza.splitlines() if not line.startswith("#")]
            fields = {
                key.strip().lower(): value.strip()
                for key, _, value in (line.partition(":") for line in lines)
            }
            suites = fields.get("suites", "").split()
            if "deb" in fields.get("types", "").split() and DEBIAN_SUITE in suites:
                return fields.get("uris", "").split()[0]
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        for line in _read(path).splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == DEBIAN_SUITE:
                return words[1]
    raise DevClusterError(
        f"no Debian {DEBIAN_SUITE} mirror in /etc/apt/sources.list(.d): set "
        "SPARSAM_DEBIAN_MIRROR (e.g. http://deb.debian.org/debian)"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def build_base(target: Path, mirror: str, run: Runner) -> None:
    """debootstrap the base into `target` (which must not exist) and slim it."""
    run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
         DEBIAN_SUITE, str(target), mirror],
        f"debootstrap {DEBIAN_SUITE} from {mirror}",
    )  # fmt: skip
    run(
        ["python3", "-m", "compileall", "-q", "-f", "--invalidation-mode", "unchecked-hash",
         "/usr/lib/python3.11", "/usr/lib/python3", "/usr/share/python3"],
        "compiling Debian's python modules",
        root=target,
    )  # fmt: skip
    for relative in _SLIM:
        folder = target / relative
        if folder.is_dir():
            for child in folder.iterdir():
                _remove(child)
    for relative in _HOST_FILES:
        (target / relative).unlink(missing_ok=True)
    for path in (target / "var/lib/dpkg").glob("*-old"):
        path.unlink()
    with (target / "etc/passwd").open("a") as passwd:
        passwd.write(f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n")
    with (target / "etc/group").open("a") as group:
        group.write(f"nonroot:x:{NONROOT_UID}:\n")
    home = target / "home/nonroot"
    home.mkdir(parents=True)
    os.chown(home, NONROOT_UID, NONROOT_UID)
    (target / "tmp").chmod(0o1777)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def pip_layer(base: Path, wheels: Path, pins: list[str], scratch: Path, run: Runner) -> oci.Layer:
    """pip-install `pins` (from the wheels in `wheels`, no index, no dependencies) into the base
    at `base` and write what that added as a layer in `scratch`."""
    pip = importlib.util.find_spec("pip")
    if pip is None or pip.origin is None:
        raise DevClusterError("pip is not importable by the python that runs sparsam")
    upper = scratch / "upper"
    with _overlay(base, scratch) as merged:
        (merged / "tmp/requirements.txt").write_text("\n".join(pins) + "\n")
        with (
            _bind(wheels, merged / "tmp/wheels"),
            _bind(Path(pip.origin).parent, merged / "tmp/pip/pip"),
        ):
            run(
                ["env", "PYTHONPATH=/tmp/pip", "python3", "-m", "pip", "install", "--quiet",
                 "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
                 "--disable-pip-version-check", "--no-warn-script-location",
                 "--break-system-packages", "--root-user-action=ignore",
                 "--find-links=/tmp/wheels", "--requirement=/tmp/requirements.txt"],
                f"pip install of {len(pins)} pinned packages",
                root=merged,
            )  # fmt: skip
        # Status 1 is a module this Python cannot compile: torch ships some in newer syntax
        # (its tests of 3.12 features), which pip's own compile step skips the same way.
        run(
            ["python3", "-m", "compileall", "-qq", "--invalidation-mode", "unchecked-hash",
             f"/{PYTHON_SITE}"],
            "compiling the installed packages",
            root=merged,
            ok=(0, 1),
        )  # fmt: skip
    members, whiteouts = changes(upper)
    return oci.write_layer(upper, scratch / "layer.tar.gz", members, whiteouts)


def changes(upper: Path) -> tuple[list[str], list[str]]:
    """An overlay upper folder as a layer: the paths to include, and the whiteouts (deleted
    paths: overlayfs marks them as 0/0 character devices)."""
    members: list[str] = []
    whiteouts: list[str] = []
    for name in oci.walk(upper):
        if name.startswith(_SCRATCH):
            continue
        st = (upper / name).lstat()
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            whiteouts.append(name)
        else:
            members.append(name)
    return members, whiteouts


@contextmanager
def _overlay(lower: Path, scratch: Path) -> Iterator[Path]:
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for folder in (upper, work, merged):
        folder.mkdir()
    _mount(
        ["-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}"],
        merged,
    )
    try:
        yield merged
    finally:
        _umount(merged)


@contextmanager
def _bind(source: Path, target: Path) -> Iterator[None]:
    target.mkdir(parents=True, exist_ok=True)
    _mount(["--bind", "-o", "ro", str(source)], target)
    try:
        yield
    finally:
        _umount(target)


def _mount(args: list[str], target: Path) -> None:
    done = subprocess.run(
        ["mount", *args, str(target)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise DevClusterError(
            f"mount {' '.join(args)} failed: {done.stderr.strip() or 'no output'} "
            "(building the images needs root and overlayfs)"
        )


def remove_scratch(scratch: Path) -> None:
    """Remove a scratch folder a killed build left, unmounting what it left mounted first."""
    mounts = [
        line.split()[1] for line in _read(Path("/proc/self/mounts")).splitlines() if line.split()
    ]
    inside = [m for m in mounts if m == str(scratch) or m.startswith(f"{scratch}/")]
    for mount in sorted(inside, key=len, reverse=True):
        _umount(Path(mount))
    shutil.rmtree(scratch, ignore_errors=True)


def _umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], capture_output=True, check=False)
