"""The CLI speaks to users in one line, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparsam.logs import JsonFormatter, RoutineSuccess


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


def test_json_log_records_name_the_object() -> None:
    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Timer %s", ("ok",), None)
    record.k8s_ref = {"kind": "TrainingJob", "namespace": "ml", "name": "bbc", "uid": "u"}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "Timer ok" and entry["level"] == "INFO"
    assert entry["object"] == {"kind": "TrainingJob", "namespace": "ml", "name": "bbc"}


def test_only_kopfs_routine_successes_are_dropped_from_the_log() -> None:
    def record(name: str, level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, message, (), None)

    keep = RoutineSuccess().filter
    assert not keep(record("kopf.objects", logging.INFO, "Timer 'reconcile' succeeded."))
    assert not keep(record("kopf.objects", logging.INFO, "Handler 'queue' succeeded."))
    assert keep(record("kopf.objects", logging.ERROR, "Timer 'workers' failed with an exception."))
    assert keep(record("kopf.objects", logging.INFO, "Handler 'retire' succeeded after 2 tries."))
    assert keep(record("sparsam.capacity", logging.INFO, "Handler 'x' succeeded."))


def test_peering_is_off_unless_named() -> None:
    from sparsam.cli import _parser, run_config

    alone = run_config(_parser().parse_args(["run"]))
    assert (alone.peering, alone.priority) == (None, 0)
    peered = run_config(_parser().parse_args(["run", "--peering=sparsam", "--priority=10"]))
    assert (peered.peering, peered.priority) == ("sparsam", 10)


def test_status_writes_per_second_is_a_positive_rate(capsys: pytest.CaptureFixture[str]) -> None:
    from sparsam.cli import _parser, run_config

    assert run_config(_parser().parse_args(["run"])).status_writes_per_second == 20.0
    faster = _parser().parse_args(["run", "--status-writes-per-second=50"])
    assert run_config(faster).status_writes_per_second == 50.0
    for bad in ("0", "-1", "nan", "inf", "fast"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["run", f"--status-writes-per-second={bad}"])
        assert f"expected a number > 0, got '{bad}'" in capsys.readouterr().err


def test_namespaces_are_every_one_unless_listed(capsys: pytest.CaptureFixture[str]) -> None:
    from sparsam.cli import _parser, run_config

    assert run_config(_parser().parse_args(["run"])).namespaces == ()
    listed = _parser().parse_args(["run", "--namespace=ml", "--namespace=web", "--namespace=ml"])
    assert run_config(listed).namespaces == ("ml", "web")
    for bad in ("ML", "a_b", "-x", "x" * 64):
        with pytest.raises(SystemExit):
            _parser().parse_args(["run", f"--namespace={bad}"])
        assert f"{bad!r} is not a namespace name" in capsys.readouterr().err


def test_spot_pool_max_share_is_a_fraction(capsys: pytest.CaptureFixture[str]) -> None:
    from sparsam.cli import _parser, run_config

    assert run_config(_parser().parse_args(["run"])).spot_pool_max_share == 1.0
    spread = _parser().parse_args(["run", "--spot-pool-max-share=0.5"])
    assert run_config(spread).spot_pool_max_share == 0.5
    for bad in ("0", "1.5", "-0.2", "nan", "half"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["run", f"--spot-pool-max-share={bad}"])
        assert f"expected a fraction in (0, 1], got '{bad}'" in capsys.readouterr().err
