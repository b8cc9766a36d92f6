"""The pause image, built for real, imports into a real containerd and runs under runc.

The containerd here is the test's own (its root, state and sockets in a temporary folder, the
CRI plugin off), so it never touches a containerd the machine runs. Needs root, containerd, ctr
and runc; the first build downloads Debian's catatonit package (260 KB) once into the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparsam.devcluster.images import ensure_image

NAMESPACE = "k8s.io"


@pytest.fixture
def ctr() -> Iterator[list[str]]:
    missing = [tool for tool in ("containerd", "ctr", "runc") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and containerd, ctr, runc (missing: {', '.join(missing)})")
    # A short path: unix socket paths are limited to 108 bytes.
    home = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))
    socket = home / "containerd.sock"
    (home / "config.toml").write_text(
        f'version = 2\nroot = "{home}/root"\nstate = "{home}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{socket}.ttrpc"\n'
        '[metrics]\n  address = ""\n'
    )
    log = (home / "containerd.log").open("w")
    daemon = subprocess.Popen(
        ["containerd", "--config", str(home / "config.toml")], stdout=log, stderr=log
    )
    command = ["ctr", "--address", str(socket), "--namespace", NAMESPACE]
    try:
        for _ in range(100):
            if subprocess.run([*command, "version"], capture_output=True).returncode == 0:
                break
            if daemon.poll() is not None:
                pytest.fail(f"containerd exited: {(home / 'containerd.log').read_text()[-500:]}")
            time.sleep(0.1)
        yield command
    finally:
        subprocess.run([*command, "task", "kill", "-s", "KILL", "pause"], capture_output=True)
        subprocess.run([*command, "task", "delete", "--force", "pause"], capture_output=True)
        subprocess.run([*command, "container", "rm", "pause"], capture_output=True)
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        subprocess.run(["umount", "-R", str(home / "state")], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _ctr(command: list[str], *args: str) -> str:
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ctr {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def test_the_pause_image_imports_into_containerd_and_pauses(ctr: list[str]) -> None:
    archive = ensure_image("pause")
    assert archive.path.is_file() and archive.size_bytes == archive.path.stat().st_size
    _ctr(ctr, "images", "import", str(archive.path))
    listed = _ctr(ctr, "images", "list", "--quiet").split()
    assert archive.ref in listed
    assert archive.digest in _ctr(ctr, "images", "list")
    _ctr(ctr, "run", "--detach", archive.ref, "pause")
    time.sleep(1)
    assert "RUNNING" in _ctr(ctr, "task", "list"), "catatonit -P keeps the sandbox alive"
    _ctr(ctr, "task", "kill", "--signal", "TERM", "pause")
    for _ in range(50):
        if "STOPPED" in _ctr(ctr, "task", "list"):
            break
        time.sleep(0.1)
    assert "STOPPED" in _ctr(ctr, "task", "list"), "catatonit stops on SIGTERM"
