"""User-supplied training code: ``--entrypoint module:function``.

``function()`` is called with no arguments (after the trainer has seeded python, numpy and
torch) and returns ``(model, splits, loss)``:

- ``model``: a ``torch.nn.Module`` whose ``forward(*inputs)`` returns logits ``[B, C]``;
- ``splits``: a :class:`~sparsam_trainer.tasks.base.Splits` of TensorDatasets with items
  ``(*inputs, label)``;
- ``loss``: ``loss(logits, labels) -> scalar tensor``, averaged over the batch (like
  ``torch.nn.functional.cross_entropy``); the trainer rescales it so that the gradient is the
  mean over the global batch whatever the world size.

The module is imported the usual way (the working directory is on ``sys.path`` under
``python -m`` and torchrun ``-m``), so a pod image only has to put it there.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import TensorDataset

from sparsam_trainer.tasks.base import Splits

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class EntrypointError(ValueError):
    """The entrypoint cannot be found or did not return what the trainer needs."""


@dataclass(frozen=True)
class UserTask:
    model: torch.nn.Module
    splits: Splits
    loss: LossFn


def resolve(spec: str) -> Callable[[], object]:
    """Import ``module:function`` and return the function, or raise EntrypointError."""
    if not _SPEC.match(spec):
        raise EntrypointError(
            f"--entrypoint {spec!r}: expected module:function, e.g. mypkg.train:build"
        )
    module_name, function_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EntrypointError(f"--entrypoint {spec!r}: cannot import {module_name}: {exc}") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise EntrypointError(
            f"--entrypoint {spec!r}: module {module_name} has no function {function_name}"
        )
    return function  # type: ignore[no-any-return]


def load(spec: str, function: Callable[[], object]) -> UserTask:
    """Call the entrypoint and check what it returned."""
    result = function()
    if not (isinstance(result, tuple) and len(result) == 3):
        raise EntrypointError(
            f"--entrypoint {spec!r} must return (model, splits, loss), got {type(result).__name__}"
        )
    model, splits, loss = result
    if not isinstance(model, torch.nn.Module):
        raise EntrypointError(
            f"--entrypoint {spec!r}: model is {type(model).__name__}, not a torch.nn.Module"
        )
    if not isinstance(splits, Splits):
        raise EntrypointError(
            f"--entrypoint {spec!r}: splits is {type(splits).__name__}, "
            "not sparsam_trainer.tasks.base.Splits"
        )
    for part in ("train", "validation", "test"):
        dataset = getattr(splits, part)
        if not isinstance(dataset, TensorDataset) or len(dataset) == 0:
            raise EntrypointError(
                f"--entrypoint {spec!r}: splits.{part} must be a non-empty TensorDataset"
            )
    if not callable(loss):
        raise EntrypointError(f"--entrypoint {spec!r}: loss is not callable")
    return UserTask(model=model, splits=splits, loss=loss)
