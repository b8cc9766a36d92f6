"""The supervisor's restart policy: backoff doubling to a cap, and giving up after too many exits
in the window, starting over once old exits have left it."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from sparsam.devcluster import supervise
from sparsam.devcluster.processes import Supervision
from sparsam.devcluster.restarts import RestartPolicy, describe_exit

POLICY = RestartPolicy(max_restarts=3, window=60.0, first_delay=0.5, max_delay=1.5)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert POLICY.delay([100.0], 100.0) == 0.5
    assert POLICY.delay([100.0, 101.0], 101.0) == 1.0
    assert POLICY.delay([100.0, 101.0, 102.0], 102.0) == 1.5  # 2.0, capped


def test_gives_up_after_max_restarts_in_the_window() -> None:
    assert POLICY.delay([100.0, 101.0, 102.0, 103.0], 103.0) is None


def test_exits_that_left_the_window_are_forgotten() -> None:
    exits = [100.0, 101.0, 102.0, 170.0]
    assert POLICY.recent(exits, 170.0) == [170.0]
    assert POLICY.delay(exits, 170.0) == 0.5  # not a give-up: the backoff starts over


def test_exits_read_as_a_code_or_a_signal() -> None:
    assert describe_exit(1) == "code 1"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"


def test_an_unarmed_supervisor_exits_with_its_childs_code(tmp_path: Path) -> None:
    # Before `up` saw the component healthy, an exit is its error, not something to retry.
    record = tmp_path / "x.json"
    done = subprocess.run(
        supervise.command("x", ["sh", "-c", "exit 3"], record),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 3
    assert "before it was healthy" in done.stderr
    saved = Supervision.load(record)
    assert saved is not None
    assert (saved.restarts, saved.last_exit, saved.gave_up, saved.pid) == (0, "code 3", False, None)


def test_a_supervisor_killed_alone_takes_its_child_with_it(tmp_path: Path) -> None:
    record = tmp_path / "sleeper.json"
    supervisor = subprocess.Popen(supervise.command("sleeper", ["sleep", "60"], record))
    try:
        deadline = time.monotonic() + 20
        saved = Supervision.load(record)
        while (saved is None or saved.pid is None) and time.monotonic() < deadline:
            time.sleep(0.05)
            saved = Supervision.load(record)
        assert saved is not None and saved.pid is not None
        supervisor.kill()
        supervisor.wait(10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{saved.pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        # Gone, or a zombie waiting for init to reap it.
        stat = Path(f"/proc/{saved.pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        supervisor.kill()
