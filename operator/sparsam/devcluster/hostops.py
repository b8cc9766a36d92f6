"""The machine-level pieces of real nodes: the bridge, network namespaces, mounts, cgroups and the
processes containerd leaves outside its own process group (shims and containers).

Each function is bounded and idempotent, so a teardown can run again after a crash and finish
what the last one left.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sparsam.devcluster.errors import DevClusterError

NETNS_DIR: Final = Path("/run/netns")
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
#: The kubelet links each container's log here (a fixed path), pointing into the node's folder.
CONTAINER_LOG_LINKS: Final = Path("/var/log/containers")
#: Where containerd's shims put their sockets, whatever containerd's own state folder.
SHIM_SOCKETS: Final = Path("/run/containerd/s")
#: libcni's cache of each attachment's result, named `<network>-<container id>-<interface>`.
CNI_RESULTS: Final = Path("/var/lib/cni/results")
_MNT_DETACH: Final = 2
_KILL_TIMEOUT: Final = 10.0


def ip_command(*args: str, check: bool = True) -> str:
    ip = shutil.which("ip")
    if ip is None:
        raise DevClusterError("the `ip` command (Debian's iproute2) is not on PATH")
    done = subprocess.run([ip, *args], capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise DevClusterError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 prefix this machine routes or has an address in (default routes aside)."""
    found: list[ipaddress.IPv4Network] = []
    for route in json.loads(ip_command("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            found.append(ipaddress.IPv4Network(dst, strict=False))
    for link in json.loads(ip_command("-j", "-4", "addr", "show") or "[]"):
        for address in link.get("addr_info", []):
            found.append(
                ipaddress.IPv4Network(f"{address['local']}/{address['prefixlen']}", strict=False)
            )
    return found


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def create_bridge(name: str, address: str, prefix: int) -> None:
    """A bridge with our address on it, up; its subnet is on-link for the host, routed nowhere."""
    if not link_exists(name):
        ip_command("link", "add", "name", name, "type", "bridge")
    ip_command("addr", "replace", f"{address}/{prefix}", "dev", name)
    ip_command("link", "set", name, "up")


def add_address(link: str, address: str) -> None:
    ip_command("addr", "replace", f"{address}/32", "dev", link)


def remove_address(link: str, address: str) -> None:
    if link_exists(link):
        ip_command("addr", "del", f"{address}/32", "dev", link, check=False)


def delete_link(name: str) -> None:
    if link_exists(name):
        ip_command("link", "delete", name, check=False)


def unmount_under(folder: Path) -> list[str]:
    """Detach every mount at or below `folder`, deepest first; return the mount points."""
    done: list[str] = []
    libc = ctypes.CDLL(None, use_errno=True)
    prefix = str(folder.resolve())
    for _ in range(5):  # detaching a shared mount can surface another copy of it: look again
        points = sorted(
            (p for p in _mount_points() if p == prefix or p.startswith(prefix + "/")),
            key=lambda p: p.count("/"),
            reverse=True,
        )
        if not points:
            break
        for point in points:
            libc.umount2(point.encode(), _MNT_DETACH)
            done.append(point)
    return done


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        field = line.split(" ")[4]
        # mountinfo escapes space, tab, newline and backslash as octal.
        points.append(field.encode().decode("unicode_escape"))
    return points


@dataclass(frozen=True, slots=True)
class Container:
    """A container as runc records it: its id, first process and cgroups."""

    id: str
    pid: int
    cgroups: tuple[Path, ...]


def runc_containers(runc_root: Path) -> list[Container]:
    """Every container runc started under `runc_root` (one folder per namespace, then per id)."""
    found = []
    for state_file in sorted(runc_root.glob("*/*/state.json")):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        paths = tuple(Path(p) for p in (state.get("cgroup_paths") or {}).values())
        found.append(
            Container(state_file.parent.name, int(state.get("init_process_pid", 0)), paths)
        )
    return found


def netns_inode(pid: int) -> int | None:
    try:
        return Path(f"/proc/{pid}/ns/net").stat().st_ino
    except OSError:
        return None


def shim_pids(socket: Path) -> list[int]:
    """containerd's shims for the containerd at `socket`: each leads its own process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(socket).encode() in argv:
            found.append(int(entry.name))
    return found


def remove_shim_sockets(socket: Path, namespace: str, ids: Iterable[str]) -> None:
    """The sockets of shims killed by SIGKILL (a shim removes its own only when it exits
    cleanly); containerd names each by a hash of its own address, namespace and sandbox id."""
    for container_id in ids:
        digest = hashlib.sha256(f"{socket}/{namespace}/{container_id}".encode()).hexdigest()
        (SHIM_SOCKETS / digest).unlink(missing_ok=True)
    for folder in (SHIM_SOCKETS, SHIM_SOCKETS.parent):
        with contextlib.suppress(OSError):  # still used by another containerd
            folder.rmdir()


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _cgroup_pids(cgroup: Path) -> list[int]:
    pids: list[int] = []
    for procs in [cgroup / "cgroup.procs", *cgroup.glob("**/cgroup.procs")]:
        try:
            pids += [int(x) for x in procs.read_text().split()]
        except (OSError, ValueError):
            continue
    return pids


def kill_cgroups(cgroups: Iterable[Path]) -> None:
    """SIGKILL every process in `cgroups` until none is left, then remove the cgroups."""
    groups = [g for g in cgroups if g.is_dir()]
    deadline = time.monotonic() + _KILL_TIMEOUT
    while True:
        pids = sorted({pid for g in groups for pid in _cgroup_pids(g)})
        if not pids:
            break
        if time.monotonic() > deadline:
            raise DevClusterError(f"processes {pids[:5]} survived SIGKILL in {groups[0]}")
        kill_pids(pids)
        time.sleep(0.05)
    for group in groups:
        for child in sorted(group.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # gone already
                child.rmdir()


def remove_empty_cgroups(relative: str) -> None:
    """Remove `relative` (e.g. k8s.io) under each hierarchy if no container is left in it."""
    for hierarchy in CGROUP_ROOT.iterdir():
        folder = hierarchy / relative
        if folder.is_dir():
            with contextlib.suppress(OSError):  # another dev cluster's containers are in it
                folder.rmdir()


def netns_names() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.glob("cni-*"))


def netns_pod_ip(name: str) -> ipaddress.IPv4Address | None:
    """The address of `eth0` in the named network namespace (None when it has none)."""
    out = ip_command("-n", name, "-j", "-4", "addr", "show", "dev", "eth0", check=False)
    try:
        links = json.loads(out or "[]")
    except ValueError:
        return None
    for link in links:
        for address in link.get("addr_info", []):
            return ipaddress.IPv4Address(address["local"])
    return None


def delete_netns(name: str) -> None:
    """What `ip netns delete` does: detach the namespace's pin and remove it."""
    path = NETNS_DIR / name
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(str(path).encode(), _MNT_DETACH)
    path.unlink(missing_ok=True)


def netns_inode_of(name: str) -> int | None:
    try:
        return (NETNS_DIR / name).stat().st_ino
    except OSError:
        return None


def remove_log_links(target: Path) -> None:
    """The kubelet's /var/log/containers links that point into `target`."""
    if not CONTAINER_LOG_LINKS.is_dir():
        return
    prefix = str(target)
    for link in CONTAINER_LOG_LINKS.iterdir():
        try:
            if link.is_symlink() and str(link.readlink()).startswith(prefix):
                link.unlink()
        except OSError:
            continue


def remove_cni_results(ids: Iterable[str]) -> None:
    """libcni's cached results for these sandboxes (the pod network's and the loopback's)."""
    if CNI_RESULTS.is_dir():
        for sandbox in ids:
            for entry in CNI_RESULTS.glob(f"*-{sandbox}-*"):
                entry.unlink(missing_ok=True)


def cgroups_available() -> str | None:
    """None when containers can get cgroups here, else what is missing."""
    if (CGROUP_ROOT / "cgroup.controllers").is_file():
        return None  # cgroup v2
    missing = [c for c in ("cpu", "memory", "pids") if not (CGROUP_ROOT / c).is_dir()]
    if missing:
        return f"no cgroup hierarchy for {', '.join(missing)} under {CGROUP_ROOT}"
    return None
