"""Knowledge distillation into a smaller student that starts from the teacher's own weights.

The student is cut from the teacher rather than built from scratch, so a short distillation is
enough: for a BERT encoder it keeps every other layer (DistilBERT's initialisation: 6 -> 3 keeps
layers 2, 4 and 6), for a CNN it keeps the conv channels with the largest filters (the same
surgery as structured pruning). The loss is Hinton et al.'s: `alpha` times the KL divergence
between the softened distributions (temperature T, scaled by T^2 so its gradient does not shrink
as T grows) plus `1 - alpha` times the cross-entropy with the true labels.

Student names (`spec.compression.distillation.student`): "auto" (half the layers of an encoder,
half the channels of a CNN), "layers:N" (an encoder with N layers), "width:F" (a CNN keeping the
fraction F of each conv's channels). Model URIs are not supported yet.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import TensorDataset

from sparsam_trainer.compress.finetune import LossFn, TrainSettings, train_steps
from sparsam_trainer.compress.prune import encoder_layers, prune_conv_channels

STUDENT_FORMS = '"auto", "layers:N" (encoder models), "width:F" with 0 < F < 1 (CNN models)'
_LAYERS = re.compile(r"^layers:(\d+)$")
_WIDTH = re.compile(r"^width:(0?\.\d+)$")


class StudentError(ValueError):
    """The student name is not one this trainer can build for this model."""


@dataclass(frozen=True, slots=True)
class Student:
    model: nn.Module
    description: str


def keep_layer_indices(total: int, keep: int) -> list[int]:
    """`keep` of `total` layers, evenly spaced and always including the last."""
    return [round((i + 1) * total / keep) - 1 for i in range(keep)]


def make_student(teacher: nn.Module, name: str) -> Student:
    """A smaller copy of `teacher` as `name` describes (see the module docstring)."""
    layers = encoder_layers(teacher)
    student = copy.deepcopy(teacher)
    if layers is not None:
        total = len(layers)
        if name == "auto":
            keep = max(1, total // 2)
        elif match := _LAYERS.match(name):
            keep = int(match.group(1))
            if not 1 <= keep < total:
                raise StudentError(f"student {name!r}: the teacher has {total} layers; keep 1..")
        else:
            raise StudentError(
                f"student {name!r} is not known for an encoder model; use {STUDENT_FORMS}"
            )
        indices = keep_layer_indices(total, keep)
        student_layers = encoder_layers(student)
        assert student_layers is not None
        kept = nn.ModuleList([student_layers[i] for i in indices])
        student.encoder.encoder.layer = kept  # type: ignore[union-attr]
        config = getattr(student.encoder, "config", None)
        if config is not None:
            config.num_hidden_layers = keep
        return Student(student, f"{keep} of {total} encoder layers ({indices})")
    if name == "auto":
        fraction = 0.5
    elif match := _WIDTH.match(name):
        fraction = 1 - float(match.group(1))
    else:
        raise StudentError(f"student {name!r} is not known for a CNN model; use {STUDENT_FORMS}")
    channels = prune_conv_channels(student, fraction)
    widths = ", ".join(f"{before}->{after}" for before, after in channels.values())
    return Student(student, f"conv channels {widths}")


def distillation_loss(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """Hinton's loss against `teacher`'s logits, for `train_steps`."""
    teacher.eval()

    def loss(student: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        inputs, labels = batch[:-1], batch[-1]
        with torch.no_grad():
            soft_targets = functional.softmax(teacher(*inputs) / temperature, dim=-1)
        logits = student(*inputs)
        soft = functional.kl_div(
            functional.log_softmax(logits / temperature, dim=-1),
            soft_targets,
            reduction="batchmean",
        )
        hard = functional.cross_entropy(logits, labels)
        return alpha * temperature**2 * soft + (1 - alpha) * hard

    return loss


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train: TensorDataset,
    *,
    temperature: float,
    alpha: float,
    epochs: int,
    settings: TrainSettings,
    max_steps: int | None = None,
) -> tuple[int, float | None]:
    """Train `student` on `train` against `teacher`; returns (steps run, final loss)."""
    steps = epochs * math.ceil(len(train) / settings.batch_size)
    if max_steps is not None:
        steps = min(steps, max_steps)
    run = TrainSettings(
        steps=steps,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
    )
    loss = train_steps(student, train, run, distillation_loss(teacher, temperature, alpha))
    return steps, loss
