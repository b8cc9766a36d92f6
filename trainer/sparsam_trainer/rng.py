"""Seeding and saving the random generators, so that runs repeat and resumed runs continue.

Three generators matter: python's ``random`` and numpy's legacy global one (user entrypoints and
their augmentations may use either) and torch's. Checkpoints carry all three (of rank 0; on resume
every rank restores it). Torch randomness inside the training step (dropout) is in addition
reseeded every step from ``(seed, step, rank)``: that makes it independent of how many steps ran
in this process, so a resumed run draws the same dropout masks the uninterrupted one would have.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_step(seed: int, step: int, rank: int) -> None:
    torch.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


def rng_state() -> dict[str, Any]:
    """The three generator states, as plain lists and tensors (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
