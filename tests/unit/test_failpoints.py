"""`sparsam.failpoints`: an armed failpoint ends the process with 137 and one log line, as a
SIGKILL would; an unarmed one (the variable unset, or naming others) does nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = (
    "from sparsam import failpoints\n"
    "failpoints.hit('training.after-service', 'team-a')\n"
    "print('went on', flush=True)\n"
)


def run(armed: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SPARSAM_FAILPOINTS"}
    if armed is not None:
        env["SPARSAM_FAILPOINTS"] = armed
    return subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "armed",
    [
        "training.after-service",
        "capacity.after-cordon, training.after-service ,",
        "training.after-service@team-a",
    ],
    ids=["alone", "among-others-with-spaces", "this-namespace"],
)
def test_an_armed_failpoint_exits_137_without_going_on(armed: str) -> None:
    done = run(armed)
    assert done.returncode == 137
    assert "went on" not in done.stdout
    assert "failpoint training.after-service: exiting as a crash would" in done.stderr


@pytest.mark.parametrize(
    "armed",
    [None, "", "training.before-status", "training", "training.after-service@team-b"],
    ids=["unset", "empty", "other", "prefix", "other-namespace"],
)
def test_an_unarmed_failpoint_does_nothing(armed: str | None) -> None:
    done = run(armed)
    assert (done.returncode, done.stdout, done.stderr) == (0, "went on\n", "")
