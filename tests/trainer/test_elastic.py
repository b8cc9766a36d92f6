"""Preemption and elasticity, run as pods run them: SIGTERM, SIGKILL, restarts, re-rendezvous."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tests.kubelet import log_tail_message

from sparsam.decisions.training import STORE_LOST
from sparsam.kube.trainingjob import TORCHRUN_ENV
from sparsam_trainer import checkpoint, exitcodes
from sparsam_trainer.progress import read_progress

# 1,280 images, global batch 32, 2 epochs: 80 steps, a few seconds on one core.
MNIST_RUN = ("--task=mnist-cnn", "--max-train-samples=1280", "--batch-size=32", "--epochs=2")


def _wait_for(
    condition: Callable[[], bool], process: subprocess.Popen[str], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"process ended ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _records(progress: Path) -> list[dict[str, Any]]:
    return read_progress(progress) if progress.exists() else []


def _last_step(progress: Path) -> int:
    steps = [r["step"] for r in _records(progress) if r["event"] == "step"]
    return steps[-1] if steps else 0


def _step_losses(progress: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _records(progress) if r["event"] == "step"}


def _descendants(pid: int) -> list[int]:
    """All processes below ``pid``. torchrun starts each worker in a session of its own, so
    killing the agent's process group alone would leave its worker running."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _kill_pod(pid: int) -> None:
    """SIGKILL everything that was started by ``pid``, as a vanished node takes its pod."""
    inside = _descendants(pid)
    os.killpg(pid, signal.SIGKILL)
    for process in inside:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process, signal.SIGKILL)


def _run(
    command: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_sigterm_checkpoints_exits_75_and_the_restart_continues_the_same_run(
    tmp_path: Path, trainer_env: dict[str, str], train_command: Callable[..., list[str]]
) -> None:
    """The resumed run is bitwise the uninterrupted one: same losses, same final model.

    That holds because the checkpoint carries model, optimizer, scheduler and data position,
    and torch randomness is reseeded per step; it is asserted at the same world size (a
    different world size changes the order of floating-point sums).
    """
    reference = tmp_path / "reference"
    done = _run(
        train_command(
            *MNIST_RUN,
            f"--output-dir={reference}",
            f"--progress-file={reference}/progress.jsonl",
            "--progress-every=1",
        ),
        trainer_env,
    )
    assert done.returncode == exitcodes.OK, done.stderr[-3000:]

    out = tmp_path / "preempted"
    progress = out / "progress.jsonl"
    command = train_command(
        *MNIST_RUN,
        f"--output-dir={out}",
        f"--progress-file={progress}",
        "--progress-every=1",
        "--checkpoint-interval=1h",  # so the only mid-run checkpoint is the preemption's
    )
    with subprocess.Popen(
        command, env=trainer_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as process:
        _wait_for(lambda: _last_step(progress) >= 10, process, 90, "step 10")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == exitcodes.PREEMPTED, stderr[-3000:]
    stopped = _records(progress)[-1]
    assert stopped["event"] == "preempted"
    assert 10 <= stopped["step"] < 80
    assert [s for s, _ in checkpoint.list_checkpoints(out / "checkpoints")] == [stopped["step"]]

    resumed = _run(command, trainer_env)
    assert resumed.returncode == exitcodes.OK, resumed.stderr[-3000:]
    starts = [r for r in _records(progress) if r["event"] == "start"]
    assert [s["resumed_from"] for s in starts] == [None, stopped["step"]]

    assert _step_losses(progress) == _step_losses(reference / "progress.jsonl")
    final = torch.load(out / "model.pt", weights_only=True)
    expected = torch.load(reference / "model.pt", weights_only=True)
    assert final["metrics"] == expected["metrics"]
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), name


def _worker_with_rank(agent: int, rank: int) -> int:
    for pid in _descendants(agent):
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ:
                return pid
    raise AssertionError(f"no worker with rank {rank} under {agent}")


def test_ranks_agree_on_the_stop_step_when_only_one_is_signalled(
    tmp_path: Path, trainer_env: dict[str, str], train_command: Callable[..., list[str]]
) -> None:
    """SIGTERM reaches rank 1 only; rank 0 still stops after the same step and checkpoints it.

    (torchrun itself reports the workers' 75 as a failure and exits 1; in a pod the kubelet
    signals torchrun, which forwards SIGTERM to every worker.)
    """
    progress = tmp_path / "progress.jsonl"
    with subprocess.Popen(
        train_command(
            *MNIST_RUN,
            f"--output-dir={tmp_path}",
            f"--progress-file={progress}",
            "--progress-every=1",
            "--checkpoint-interval=1h",
            torchrun=["--standalone", "--nproc-per-node=2", "--max-restarts=0"],
        ),
        env=trainer_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as launcher:
        _wait_for(lambda: _last_step(progress) >= 5, launcher, 90, "step 5")
        os.kill(_worker_with_rank(launcher.pid, 1), signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=60)
    stopped = _records(progress)[-1]
    assert stopped["event"] == "preempted"
    assert stopped["world_size"] == 2
    step = stopped["step"]
    assert stderr.count(f"preempted at step {step}; checkpoint written") == 2, stderr[-3000:]
    assert "preempted at step" not in stderr.replace(f"preempted at step {step};", "")
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "checkpoints")] == [step]
    assert "exitcode: 75" in stderr


def test_resume_skips_a_truncated_checkpoint(
    tmp_path: Path, trainer_env: dict[str, str], train_command: Callable[..., list[str]]
) -> None:
    out = tmp_path / "run"
    first = _run(
        train_command(
            "--task=mnist-cnn",
            "--max-train-samples=640",
            "--batch-size=32",
            "--epochs=1",
            "--checkpoint-interval=8steps",
            f"--output-dir={out}",
        ),
        trainer_env,
    )
    assert first.returncode == exitcodes.OK, first.stderr[-3000:]
    assert [s for s, _ in checkpoint.list_checkpoints(out / "checkpoints")] == [8, 16, 20]
    newest = out / "checkpoints" / checkpoint.checkpoint_name(20)
    newest.write_bytes(newest.read_bytes()[:1000])

    progress = out / "progress.jsonl"
    second = _run(
        train_command(
            "--task=mnist-cnn",
            "--max-train-samples=640",
            "--batch-size=32",
            "--epochs=2",
            "--checkpoint-interval=8steps",
            f"--output-dir={out}",
            f"--progress-file={progress}",
        ),
        trainer_env,
    )
    assert second.returncode == exitcodes.OK, second.stderr[-3000:]
    assert "skipping checkpoint" in second.stderr
    assert newest.name in second.stderr
    assert _records(progress)[0]["resumed_from"] == 16
    assert _records(progress)[-1]["step"] == 40


class Agents:
    """torchrun agents with one worker each, like the pods of one TrainingJob: c10d rendezvous
    at one endpoint, one checkpoint volume (`out`), and the environment the operator gives its
    worker pods (`kube.trainingjob.TORCHRUN_ENV`).

    With c10d rendezvous one agent hosts the rendezvous store (by default the one whose address
    matches the endpoint; all do here, so it is pinned with ``is_host``). Heartbeats every
    second, a node missing 3 is dead (default 5 s x 3), so that rounds close sooner.
    """

    def __init__(
        self,
        tmp_path: Path,
        env: dict[str, str],
        train_command: Callable[..., list[str]],
        port: int,
        epochs: int,
    ) -> None:
        self.logs = tmp_path
        self.out = tmp_path / "shared"
        self.progress = self.out / "progress.jsonl"
        self._env = {**env, **TORCHRUN_ENV}
        self._command, self._port, self._epochs = train_command, port, epochs
        self.started: list[subprocess.Popen[str]] = []

    def start(self, name: str, is_host: bool) -> subprocess.Popen[str]:
        command = self._command(
            "--task=mnist-cnn",
            "--batch-size=32",
            f"--epochs={self._epochs}",
            "--checkpoint-interval=5steps",
            "--progress-every=1",
            "--collective-timeout=30",
            f"--output-dir={self.out}",
            f"--progress-file={self.progress}",
            torchrun=[
                "--nnodes=1:2",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{self._port}",
                f"--rdzv-id=elastic-{self._port}",
                "--rdzv-conf=join_timeout=60,last_call_timeout=2,keep_alive_interval=1,"
                f"keep_alive_max_attempt=3,is_host={int(is_host)}",
                "--max-restarts=3",
                "--monitor-interval=0.5",
            ],
        )
        process = subprocess.Popen(
            command,
            env=self._env,
            stdout=(self.logs / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, like a pod
        )
        self.started.append(process)
        return process

    def start_two(self) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
        """The store's host and one other agent, once they train together and a checkpoint
        is written."""
        host = self.start("host", is_host=True)
        other = self.start("other", is_host=False)
        _wait_for(self.running_as_two, host, 120, "two workers training and a checkpoint")
        return host, other

    def running_as_two(self) -> bool:
        records = _records(self.progress)
        two = [r for r in records if r["world_size"] == 2 and r["event"] == "step"]
        saved = checkpoint.list_checkpoints(self.out / "checkpoints")
        return len(two) > 0 and two[-1]["step"] >= 10 and len(saved) > 0

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-4000:]

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                _kill_pod(process.pid)
                process.wait()


def test_survivor_continues_at_world_size_1_after_the_other_node_is_killed(
    tmp_path: Path,
    trainer_env: dict[str, str],
    train_command: Callable[..., list[str]],
    free_port: int,
) -> None:
    """Killing the store's host would take the store with it, so the test SIGKILLs the OTHER
    agent's whole process group, and its worker (torchrun gives each worker a session of its
    own), as a reclaimed spot node would vanish. The host's worker fails its next collective,
    its agent restarts it (``--max-restarts``), the next rendezvous round closes with one node,
    and training continues from the last checkpoint at world size 1 and finishes.
    """
    # Long enough (109 steps an epoch) that the kill lands mid-run even on a loaded machine.
    epochs = 4
    agents = Agents(tmp_path, trainer_env, train_command, free_port, epochs)
    try:
        host, other = agents.start_two()
        _kill_pod(other.pid)
        other.wait(timeout=30)
        killed_at = _last_step(agents.progress)
        host.wait(timeout=180)
    finally:
        agents.stop()
    assert host.returncode == exitcodes.OK, agents.log("host")

    records = _records(agents.progress)
    starts = [r for r in records if r["event"] == "start"]
    assert starts[0]["world_size"] == 2
    restart = starts[-1]
    assert restart["world_size"] == 1
    assert 0 < restart["resumed_from"] <= killed_at
    after = records[records.index(restart) :]
    assert {r["world_size"] for r in after} == {1}
    assert after[-1]["event"] == "done"
    assert after[-1]["step"] == epochs * (3500 // 32)
    assert (agents.out / "model.pt").exists()


def test_a_replacement_joins_seconds_after_the_loss_and_training_goes_on_as_two(
    tmp_path: Path,
    trainer_env: dict[str, str],
    train_command: Callable[..., list[str]],
    free_port: int,
) -> None:
    """What a TrainingJob's replacement worker does: it starts two seconds after its
    predecessor was killed, while the survivor's agent is still closing its round without it,
    and joins the next round below rank 0 (ranks follow host name, then pid). With the
    pods' TORCHRUN_ENV the two train on together from the last checkpoint and finish; without
    it both agents wait on each other's keys in the store until they time out (60 s)."""
    epochs = 15  # about 1,600 steps: the replacement joins long before the end
    agents = Agents(tmp_path, trainer_env, train_command, free_port, epochs)
    try:
        host, other = agents.start_two()
        _kill_pod(other.pid)
        other.wait(timeout=30)
        before = len([r for r in _records(agents.progress) if r["event"] == "start"])
        time.sleep(2)
        replacement = agents.start("replacement", is_host=False)
        host.wait(timeout=240)
        replacement.wait(timeout=60)
    finally:
        agents.stop()
    assert host.returncode == exitcodes.OK, agents.log("host")
    assert replacement.returncode == exitcodes.OK, agents.log("replacement")

    records = _records(agents.progress)
    starts = [r for r in records if r["event"] == "start"]
    # After the loss: perhaps a round alone, then the replacement's, both from checkpoints.
    after_loss = starts[before:]
    assert after_loss, starts
    assert all(s["resumed_from"] for s in after_loss), after_loss
    joined = after_loss[-1]
    assert joined["world_size"] == 2, after_loss
    tail = records[records.index(joined) :]
    assert {r["world_size"] for r in tail} == {2}
    assert tail[-1]["event"] == "done"
    assert tail[-1]["step"] == epochs * (3500 // 32)


def test_losing_the_store_host_ends_the_other_agent_with_the_error_the_operator_reads(
    tmp_path: Path,
    trainer_env: dict[str, str],
    train_command: Callable[..., list[str]],
    free_port: int,
) -> None:
    """Worker 0's agent hosts the rendezvous store; killed, it takes the store with it, and
    the other agent does not survive that: it exits 1 with a RendezvousConnectionError. The
    operator reads that error in the pod's termination message (the end of the log, by
    `terminationMessagePolicy: FallbackToLogsOnError`: at most 80 lines and 2,048 bytes) and
    does not count it as a failure (`decisions.training.lost_its_store`)."""
    agents = Agents(tmp_path, trainer_env, train_command, free_port, epochs=4)
    try:
        host, other = agents.start_two()
        _kill_pod(host.pid)
        host.wait(timeout=30)
        other.wait(timeout=90)
    finally:
        agents.stop()
    assert other.returncode == 1, agents.log("other")
    kept = log_tail_message((tmp_path / "other.log").read_text())
    assert STORE_LOST in kept, kept
