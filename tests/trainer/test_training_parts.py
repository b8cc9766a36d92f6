"""The pieces the training loop is built from: data position, schedule, metrics, CLI defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparsam_trainer.data import global_batches, shard, subset_indices
from sparsam_trainer.evaluation import scores
from sparsam_trainer.intervals import Interval
from sparsam_trainer.schedule import warmup_cosine
from sparsam_trainer.train import build_parser


@pytest.mark.parametrize("world_size", [1, 2, 3, 5], ids=lambda w: f"world-{w}")
def test_shards_of_a_global_batch_partition_it_for_any_world_size(world_size: int) -> None:
    batch = next(global_batches(100, 16, seed=7, epoch=0))
    parts = [shard(batch, rank, world_size) for rank in range(world_size)]
    assert sorted(torch.cat(parts).tolist()) == sorted(batch.tolist())
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_global_batches_resume_where_they_left_off_and_reshuffle_per_epoch() -> None:
    whole = list(global_batches(100, 16, seed=7, epoch=2))
    assert len(whole) == 6  # the incomplete tail (4 samples) is dropped
    resumed = list(global_batches(100, 16, seed=7, epoch=2, start=4))
    assert all(torch.equal(a, b) for a, b in zip(whole[4:], resumed, strict=True))
    next_epoch = list(global_batches(100, 16, seed=7, epoch=3))
    assert not torch.equal(whole[0], next_epoch[0])
    visited = torch.cat(whole)
    assert len(set(visited.tolist())) == len(visited)


@pytest.mark.parametrize(
    ("limit", "expected"), [(None, None), (500, None), (10, 10)], ids=["none", "above", "below"]
)
def test_subset_indices(limit: int | None, expected: int | None) -> None:
    subset = subset_indices(100, limit, seed=1)
    if expected is None:
        assert subset is None
    else:
        assert subset is not None
        assert len(subset) == expected
        assert torch.equal(subset, subset_indices(100, limit, seed=1))


def test_warmup_cosine_rises_linearly_then_decays_to_zero() -> None:
    factor = warmup_cosine(total_steps=100, warmup_fraction=0.1)
    assert [factor(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-12)
    decay = [factor(s) for s in range(10, 101)]
    assert decay == sorted(decay, reverse=True)


@pytest.mark.parametrize(
    ("confusion", "accuracy", "macro_f1"),
    [
        ([[5, 0], [0, 5]], 1.0, 1.0),
        ([[5, 5], [0, 0]], 0.5, (2 / 3 + 0) / 2),  # class 1 predicted, never true: F1 0
        ([[3, 0, 0], [0, 0, 0], [1, 0, 0]], 0.75, (6 / 7 + 0) / 2),  # class 1 absent: not counted
    ],
    ids=["perfect", "one-class-only-predicted", "absent-class"],
)
def test_scores(confusion: list[list[int]], accuracy: float, macro_f1: float) -> None:
    result = scores(torch.tensor(confusion, dtype=torch.float64), loss_sum=2.0)
    assert result["accuracy"] == pytest.approx(accuracy)
    assert result["macro_f1"] == pytest.approx(macro_f1)
    assert result["loss"] == pytest.approx(2.0 / sum(map(sum, confusion)))


def test_pod_environment_supplies_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARSAM_CHECKPOINT_DIR", "/ckpt/job")
    monkeypatch.setenv("SPARSAM_PROGRESS_FILE", "/ckpt/job/progress.jsonl")
    monkeypatch.setenv("SPARSAM_CHECKPOINT_INTERVAL", "1m30s")
    args = build_parser().parse_args(["--task=mnist-cnn"])
    assert args.output_dir == args.checkpoint_dir == Path("/ckpt/job")
    assert args.progress_file == Path("/ckpt/job/progress.jsonl")
    assert args.checkpoint_interval == Interval(seconds=90.0)
    explicit = build_parser().parse_args(["--task=mnist-cnn", "--checkpoint-interval=50steps"])
    assert explicit.checkpoint_interval == Interval(steps=50)


def test_without_pod_environment_the_output_dir_is_required(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("SPARSAM_OUTPUT_DIR", "SPARSAM_CHECKPOINT_DIR"):
        monkeypatch.delenv(name, raising=False)
    from sparsam_trainer.train import main

    with pytest.raises(SystemExit) as exited:
        main(["--task=mnist-cnn"])
    assert exited.value.code == 2
    assert "--output-dir is required (or set SPARSAM_OUTPUT_DIR)" in capsys.readouterr().err
