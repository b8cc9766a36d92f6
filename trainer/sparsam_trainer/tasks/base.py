"""The task contract shared by training, compression and serving.

A task is everything that differs between two models sparsam can train: where its data comes
from and how it is split, which network it builds, and how a raw JSON request becomes model
inputs. Training, compression and the exporter only ever talk to this protocol, so a new built-in
task is one module in this package and nothing else changes.

Splits are fixed and stratified (every class keeps its share in train, validation and test) and
depend only on the seed: a resumed or re-sharded run, the compression stage and the benchmark all
see exactly the same test set, which is what makes "accuracy before vs after" comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import TensorDataset

# Fractions of every class that go to train and validation; test gets the rest (~70/15/15).
TRAIN_FRACTION = 0.70
VALIDATION_FRACTION = 0.15


@dataclass(frozen=True)
class Splits:
    """Train, validation and test sets; every item is ``(*inputs, label)``."""

    train: TensorDataset
    validation: TensorDataset
    test: TensorDataset


class Task(Protocol):
    name: str
    """Registered name, e.g. ``"mnist-cnn"``."""
    labels: tuple[str, ...]
    """Class names; the position is the class id the model predicts."""
    input_names: tuple[str, ...]
    """Names of the model's positional inputs, in order."""

    def splits(self, seed: int = 0) -> Splits:
        """Fixed, stratified, deterministic ~70/15/15 split of the task's data."""
        ...

    def build_model(self) -> torch.nn.Module:
        """A fresh model whose ``forward(*inputs)`` returns logits ``[B, len(labels)]``."""
        ...

    def input_spec(self) -> dict[str, Any]:
        """JSON-able description of how raw request instances become inputs (see export)."""
        ...

    def encode(self, instances: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        """Raw JSON instances to model inputs, exactly as the model server does it."""
        ...


def stratified_indices(
    labels: np.ndarray[Any, np.dtype[np.int64]], seed: int
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], ...]:
    """Split sample indices into (train, validation, test), class by class.

    Each class is shuffled with its own generator derived from ``seed`` and the class id, so
    adding data to one class never moves samples of another between splits.
    """
    parts: list[list[np.ndarray[Any, np.dtype[np.int64]]]] = [[], [], []]
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls).astype(np.int64)
        rng = np.random.default_rng([seed, int(cls)])
        members = rng.permutation(members)
        n_train = round(len(members) * TRAIN_FRACTION)
        n_val = round(len(members) * VALIDATION_FRACTION)
        parts[0].append(members[:n_train])
        parts[1].append(members[n_train : n_train + n_val])
        parts[2].append(members[n_train + n_val :])
    # Sorted so the order of a split does not depend on class iteration order; the trainer
    # shuffles per epoch anyway.
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def split_tensors(inputs: tuple[torch.Tensor, ...], labels: torch.Tensor, seed: int) -> Splits:
    """Build :class:`Splits` from whole-dataset tensors with :func:`stratified_indices`."""
    train, validation, test = (
        torch.from_numpy(idx) for idx in stratified_indices(labels.numpy().astype(np.int64), seed)
    )
    return Splits(
        train=TensorDataset(*(t[train] for t in inputs), labels[train]),
        validation=TensorDataset(*(t[validation] for t in inputs), labels[validation]),
        test=TensorDataset(*(t[test] for t in inputs), labels[test]),
    )
