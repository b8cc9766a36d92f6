"""Short training loops that follow a pruning step or train a distilled student.

Compression runs once per trained model in a pod with a fixed budget, so these loops count
steps, not epochs: a few hundred batches recover most of what pruning costs, and the step count
is what the caller (and the report) can state exactly. Batches are drawn with a seeded generator
so two runs with the same settings produce the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import TensorDataset

LossFn = Callable[[nn.Module, Sequence[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True, slots=True)
class TrainSettings:
    steps: int = 100
    batch_size: int = 32
    #: None: 1e-3 for small conv nets, 5e-5 for transformer encoders (see `default_lr`).
    learning_rate: float | None = None
    seed: int = 0


def default_lr(model: nn.Module) -> float:
    """Adam's usual rate for a small CNN; the usual BERT fine-tuning rate for an encoder."""
    return 5e-5 if hasattr(model, "encoder") else 1e-3


def cross_entropy(model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """The hard-label loss for a batch (*inputs, label)."""
    return functional.cross_entropy(model(*batch[:-1]), batch[-1])


def sample_batches(
    data: TensorDataset, steps: int, batch_size: int, seed: int
) -> list[tuple[torch.Tensor, ...]]:
    """`steps` random batches of `data` (items: *inputs, label), reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(data))
    batches = []
    for _ in range(steps):
        index = torch.randperm(len(data), generator=generator)[:size]
        batches.append(tuple(tensor[index] for tensor in data.tensors))
    return batches


def train_steps(
    model: nn.Module,
    data: TensorDataset,
    settings: TrainSettings,
    loss_fn: LossFn = cross_entropy,
) -> float | None:
    """Train `model` in place for `settings.steps` batches; returns the mean loss of the last
    ten steps (None when steps is 0)."""
    if settings.steps <= 0:
        return None
    lr = settings.learning_rate if settings.learning_rate is not None else default_lr(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    losses: list[float] = []
    model.train()
    for batch in sample_batches(data, settings.steps, settings.batch_size, settings.seed):
        optimizer.zero_grad()
        loss = loss_fn(model, batch)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    tail = losses[-10:]
    return sum(tail) / len(tail)
