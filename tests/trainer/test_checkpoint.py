"""Checkpoint files: atomic, rotated, verified on load; and the interval syntax."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sparsam_trainer import checkpoint
from sparsam_trainer.intervals import Interval, parse_interval


def _state(value: float) -> dict[str, Any]:
    return {"task": "t", "epoch": 0, "model": {"w": torch.full((3,), value)}}


def test_save_then_load_latest_round_trips(tmp_path: Path) -> None:
    checkpoint.save_checkpoint(tmp_path, _state(1.0), step=5, keep=3)
    checkpoint.save_checkpoint(tmp_path, _state(2.0), step=12, keep=3)
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None
    state, step = loaded
    assert step == 12
    assert state["step"] == 12
    assert torch.equal(state["model"]["w"], torch.full((3,), 2.0))


def test_load_latest_of_missing_or_empty_directory_is_none(tmp_path: Path) -> None:
    assert checkpoint.load_latest(tmp_path / "absent") is None
    assert checkpoint.load_latest(tmp_path) is None


@pytest.mark.parametrize(
    ("keep", "kept"), [(1, [40]), (2, [30, 40]), (5, [10, 20, 30, 40])], ids=["1", "2", "5"]
)
def test_only_the_newest_k_are_kept(tmp_path: Path, keep: int, kept: list[int]) -> None:
    for step in (10, 20, 30, 40):
        checkpoint.save_checkpoint(tmp_path, _state(step), step=step, keep=keep)
    assert [step for step, _ in checkpoint.list_checkpoints(tmp_path)] == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        checkpoint.checkpoint_name(s) for s in kept
    ]


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep must be at least 1"):
        checkpoint.save_checkpoint(tmp_path, _state(0), step=1, keep=0)


def test_no_partial_file_is_visible_while_writing_or_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint.save_checkpoint(tmp_path, _state(1.0), step=1, keep=3)
    real_save = torch.save
    seen_during_write: list[list[int]] = []

    def save_half_then_die(obj: object, file: Any) -> None:
        real_save(obj, file)
        file.truncate(10)  # a pod killed mid-write leaves a short file behind
        seen_during_write.append([s for s, _ in checkpoint.list_checkpoints(tmp_path)])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path, _state(2.0), step=2, keep=3)
    assert seen_during_write == [[1]]
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.checkpoint_name(1)]
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None
    assert loaded[1] == 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]),
        lambda path: path.write_bytes(b""),
        lambda path: path.write_bytes(b"not a checkpoint at all"),
        lambda path: torch.save({"model": {}}, path),
    ],
    ids=["truncated", "empty", "garbage", "foreign-dict"],
)
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(
    tmp_path: Path, damage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint.save_checkpoint(tmp_path, _state(1.0), step=10, keep=3)
    newest = checkpoint.save_checkpoint(tmp_path, _state(2.0), step=20, keep=3)
    damage(newest)
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None
    state, step = loaded
    assert step == 10
    assert torch.equal(state["model"]["w"], torch.full((3,), 1.0))
    assert "skipping checkpoint" in caplog.text
    assert newest.name in caplog.text


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".tmp-ckpt-0000000003.pt.99999999"
    stale.write_bytes(b"half")
    checkpoint.save_checkpoint(tmp_path, _state(1.0), step=4, keep=3)
    assert not stale.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", Interval(seconds=90.0)),
        ("10m", Interval(seconds=600.0)),
        ("1h30m", Interval(seconds=5400.0)),
        ("1.5s", Interval(seconds=1.5)),
        ("500ms", Interval(seconds=0.5)),
        ("200steps", Interval(steps=200)),
        ("1step", Interval(steps=1)),
        (" 5 Steps ", Interval(steps=5)),
    ],
    ids=["seconds", "minutes", "hours-minutes", "fraction", "millis", "steps", "step", "spaces"],
)
def test_parse_interval(text: str, expected: Interval) -> None:
    assert parse_interval(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "10", "10x", "m10", "0s", "0steps", "-5s", "10m garbage", "steps"],
    ids=[
        "empty",
        "no-unit",
        "bad-unit",
        "unit-first",
        "zero",
        "zero-steps",
        "negative",
        "trailing",
        "no-count",
    ],
)
def test_parse_interval_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"checkpoint interval .*(duration|must|at least)"):
        parse_interval(text)


@pytest.mark.parametrize(
    ("interval", "steps", "seconds", "due"),
    [
        (Interval(steps=10), 9, 1e9, False),
        (Interval(steps=10), 10, 0.0, True),
        (Interval(seconds=60.0), 10**6, 59.9, False),
        (Interval(seconds=60.0), 0, 60.0, True),
    ],
    ids=["steps-not-yet", "steps-due", "time-not-yet", "time-due"],
)
def test_interval_due(interval: Interval, steps: int, seconds: float, due: bool) -> None:
    assert interval.due(steps, seconds) is due
