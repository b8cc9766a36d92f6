"""Checkpoints that survive preemption: atomic files, the newest K kept, corrupt ones skipped.

Layout: one directory (on a volume shared by all workers; only rank 0 writes) holding
``ckpt-<step, 10 digits>.pt`` files. Each is a ``torch.save`` of a plain dict loadable with
``torch.load(..., weights_only=True)``:

==================  ========================================================================
key                 value
==================  ========================================================================
``format``          ``"sparsam.checkpoint/v1"``
``task``            task name (``"mnist-cnn"``, ``"bbc-minilm"``, ``"entrypoint:mod:fn"``)
``step``            optimizer steps done (global; independent of world size)
``epoch``           epoch the next batch belongs to
``batch_in_epoch``  global batches of that epoch already consumed
``model``           ``state_dict()`` of the unwrapped model (no ``module.`` prefix)
``optimizer``       AdamW ``state_dict()``
``scheduler``       learning-rate scheduler ``state_dict()``
``rng``             ``{"python", "numpy", "torch"}`` generator states of rank 0
``metrics``         last validation evaluation (``accuracy``, ``loss``, ...)
``world_size``      world size when written (informational; resume may use another)
==================  ========================================================================

A checkpoint is written to a hidden temporary file in the same directory, fsynced, renamed over
its final name and the directory fsynced, so a reader (or a restarted run) sees either the whole
file or none of it, even if the pod is killed mid-write. Loading still verifies each file and
falls back to the next older one with a warning: a volume can hand back a truncated file after a
node crash, and one bad file must not cost the whole run.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT = "sparsam.checkpoint/v1"
_NAME = re.compile(r"^ckpt-(\d{10})\.pt$")
_TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:010d}.pt"


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` to ``path`` so that ``path`` is never seen half-written."""
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with tmp.open("wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is; without this a power loss can
    # leave the old name (or none).
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoint files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(directory: Path, state: dict[str, Any], step: int, keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step``, then delete all but the newest ``keep``."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(step)
    atomic_save({**state, "format": FORMAT, "step": step}, path)
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    # Temporary files of writers that were killed mid-write (other pids) are garbage.
    for stale in directory.glob(f"{_TMP_PREFIX}*"):
        if not stale.name.endswith(f".{os.getpid()}"):
            stale.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and check one checkpoint file; ValueError if it is unreadable or not ours."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch reports truncation as RuntimeError, EOFError, ...
        raise ValueError(f"{path}: unreadable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint")
    missing = {"model", "step", "epoch", "task"} - state.keys()
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(sorted(missing))}")
    return state


def load_latest(directory: Path) -> tuple[dict[str, Any], int] | None:
    """The newest complete checkpoint and its step, or None if there is none.

    Files that cannot be loaded are skipped with a warning (and left in place for inspection).
    """
    for step, path in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(path), step
        except ValueError as exc:
            log.warning("skipping checkpoint: %s", exc)
    return None
