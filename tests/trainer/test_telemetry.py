"""The checkpoint metrics a training worker serves for the operator (`sparsam_trainer.telemetry`):
nothing before the first checkpoint, then the last write's duration, step and time, scraped
from a real training process."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.trainer.ports import free_port, wait_for

from sparsam_trainer.telemetry import CheckpointMetrics


def samples(text: str) -> dict[str, tuple[dict[str, str], float]]:
    return {
        s.name: (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_nothing_is_exported_before_the_first_checkpoint() -> None:
    metrics = CheckpointMetrics("ml", "tj")
    assert samples(generate_latest(metrics.registry).decode()) == {}
    metrics.written(step=40, seconds=0.25, at=1_800_000_000.0)
    found = samples(generate_latest(metrics.registry).decode())
    labels = {"namespace": "ml", "trainingjob": "tj"}
    assert found["sparsam_trainer_checkpoint_write_seconds"] == (labels, 0.25)
    assert found["sparsam_trainer_last_checkpoint_step"] == (labels, 40.0)
    assert found["sparsam_trainer_last_checkpoint_timestamp_seconds"] == (labels, 1_800_000_000.0)


def test_a_training_worker_serves_its_last_checkpoint(
    tmp_path: Path, trainer_env: dict[str, str], train_command: Callable[..., list[str]]
) -> None:
    port = free_port()
    env = {
        **trainer_env,
        "SPARSAM_METRICS_PORT": str(port),
        "SPARSAM_METRICS_ADDR": "127.0.0.1",
        "SPARSAM_NAMESPACE": "ml",
        "SPARSAM_JOB": "digits",
    }
    started = time.time()
    process = subprocess.Popen(
        train_command(
            "--task=mnist-cnn",
            "--max-train-samples=640",
            "--batch-size=32",
            "--epochs=50",  # far more than the test waits for; it is stopped below
            "--checkpoint-interval=8steps",
            f"--output-dir={tmp_path}/out",
        ),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def scrape() -> dict[str, tuple[dict[str, str], float]]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    return samples(r.read().decode())
            except OSError:
                return {}

        wait_for(
            lambda: scrape().get("sparsam_trainer_last_checkpoint_step", ({}, 0.0))[1] >= 16,
            120,
            "two checkpoints exported",
        )
        found = scrape()
        labels, step = found["sparsam_trainer_last_checkpoint_step"]
        assert labels == {"namespace": "ml", "trainingjob": "digits"}
        assert step % 8 == 0
        _, seconds = found["sparsam_trainer_checkpoint_write_seconds"]
        assert 0 < seconds < 30
        _, at = found["sparsam_trainer_last_checkpoint_timestamp_seconds"]
        assert started < at <= time.time()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
