"""The CLI speaks to users in one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _sparsam(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sparsam", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    done = _sparsam("dev-cluster", "kubeconfig", "--name", "never-started", env=env)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "Traceback" not in done.stderr
    assert "sparsam dev-cluster up" in done.stderr


def test_missing_go_is_reported_in_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "XDG_STATE_HOME": str(tmp_path),
        "SPARSAM_CACHE_DIR": str(tmp_path),
        "PATH": str(tmp_path / "nothing"),
    }
    env.pop("SPARSAM_BIN_DIR", None)
    done = _sparsam("dev-cluster", "up", env=env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("sparsam: error: the Go toolchain")
    assert "Traceback" not in done.stderr
