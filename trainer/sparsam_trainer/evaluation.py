"""Accuracy, macro-F1 and loss of a model on a split, computed by all ranks together.

Each rank scores every W-th sample and the confusion matrices are summed, so evaluation costs
1/W of the time on W workers and every rank ends with the same numbers. Macro-F1 averages F1 over
the classes that occur in the labels or in the predictions (a class absent from both carries no
information, and counting it as 0 would punish small evaluation subsets).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import TensorDataset

from sparsam_trainer.distributed import World, all_reduce_sum

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BATCH_SIZE = 256


def evaluate(
    model: torch.nn.Module, dataset: TensorDataset, num_labels: int, world: World, loss_fn: LossFn
) -> dict[str, float]:
    """``{"accuracy", "macro_f1", "loss", "samples"}`` over the whole ``dataset``."""
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.float64, device=world.device)
    loss_sum = torch.zeros(1, dtype=torch.float64, device=world.device)
    mine = torch.arange(world.rank, len(dataset), world.world_size)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(mine), BATCH_SIZE):
            idx = mine[start : start + BATCH_SIZE]
            *inputs, labels = (t[idx].to(world.device) for t in dataset.tensors)
            logits = model(*inputs)
            loss_sum += loss_fn(logits, labels).double() * len(idx)
            pairs = labels * num_labels + logits.argmax(dim=1)
            counts = torch.bincount(pairs, minlength=num_labels * num_labels)
            confusion += counts.view(num_labels, num_labels)
    model.train(was_training)
    all_reduce_sum(world, confusion)
    all_reduce_sum(world, loss_sum)
    return scores(confusion, float(loss_sum))


def scores(confusion: torch.Tensor, loss_sum: float) -> dict[str, float]:
    """Metrics from a confusion matrix (rows: true class, columns: predicted class)."""
    total = float(confusion.sum())
    true_positive = confusion.diag()
    denominators = confusion.sum(dim=0) + confusion.sum(dim=1)
    present = denominators > 0
    f1 = 2 * true_positive[present] / denominators[present]
    return {
        "accuracy": float(true_positive.sum()) / total if total else 0.0,
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
        "loss": loss_sum / total if total else 0.0,
        "samples": total,
    }
