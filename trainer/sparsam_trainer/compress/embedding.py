"""Compressing token embeddings: trim the vocabulary, store the rows in int8.

In all-MiniLM-L6-v2 the 30,522 x 384 token embedding is about half of the 90.9 MB state dict,
and dynamic quantization leaves it alone (it quantizes Linear layers only), so a large size ratio
needs the embedding compressed too. Two independent steps:

- vocabulary trimming keeps the rows of tokens that occur in the training data (plus the special
  tokens) and maps every other id to [UNK]. The remap is an index buffer INSIDE the model, so the
  exported model still takes the original tokenizer's ids and the server needs no new tokenizer;
- int8 rows with one float scale per row (symmetric, per-row absmax): a 4x smaller matrix whose
  lookup is a gather and a multiply, so it traces into TorchScript like any other op.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class RemappedEmbedding(nn.Module):
    """Looks up `remap[ids]` in a smaller embedding: original ids in, the same vectors out."""

    remap: torch.Tensor

    def __init__(self, remap: torch.Tensor, inner: nn.Module) -> None:
        super().__init__()
        # int32 halves the buffer (30,522 entries); ids are cast back for the lookup.
        self.register_buffer("remap", remap.to(torch.int32))
        self.inner = inner

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(self.remap[ids].long())
        return out


class Int8Embedding(nn.Module):
    """Embedding rows stored as int8 with a float32 scale per row."""

    weight_int8: torch.Tensor
    scale: torch.Tensor

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale)

    @property
    def num_embeddings(self) -> int:
        return int(self.weight_int8.shape[0])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight_int8[ids].float() * self.scale[ids].unsqueeze(-1)


def _word_embeddings(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    """(parent, attribute, module) of the token embedding of a BERT-based task model."""
    embeddings = getattr(getattr(model, "encoder", None), "embeddings", None)
    words = getattr(embeddings, "word_embeddings", None)
    if embeddings is None or not isinstance(words, nn.Module):
        raise ValueError(
            "the model has no token embedding (model.encoder.embeddings.word_embeddings)"
        )
    return embeddings, "word_embeddings", words


def vocabulary_size(model: nn.Module) -> int:
    """Rows of the token embedding as the tokenizer sees them (before any trimming)."""
    _, _, words = _word_embeddings(model)
    if isinstance(words, RemappedEmbedding):
        return int(words.remap.numel())
    if isinstance(words, nn.Embedding):
        return words.num_embeddings
    if isinstance(words, Int8Embedding):
        return words.num_embeddings
    raise ValueError(f"unknown token embedding type {type(words).__name__}")


def trim_vocabulary(model: nn.Module, seen_ids: Iterable[int], keep_ids: Iterable[int]) -> int:
    """Keep the rows of `seen_ids` and `keep_ids` (special tokens; the first of them is where
    unseen ids go, so pass [UNK] first). Returns the new vocabulary size."""
    parent, attribute, words = _word_embeddings(model)
    if not isinstance(words, nn.Embedding):
        raise ValueError(f"the token embedding is already compressed ({type(words).__name__})")
    keep_list = list(keep_ids)
    if not keep_list:
        raise ValueError("trim_vocabulary needs the [UNK] id in keep_ids")
    vocabulary = words.num_embeddings
    kept = sorted({*seen_ids, *keep_list})
    if kept[0] < 0 or kept[-1] >= vocabulary:
        raise ValueError(f"token ids must be in [0, {vocabulary}), got {kept[0]}..{kept[-1]}")
    kept_tensor = torch.tensor(kept, dtype=torch.long)
    new_position = torch.full((vocabulary,), -1, dtype=torch.long)
    new_position[kept_tensor] = torch.arange(len(kept))
    remap = torch.where(new_position >= 0, new_position, new_position[keep_list[0]])
    smaller = nn.Embedding(len(kept), words.embedding_dim)
    with torch.no_grad():
        smaller.weight.copy_(words.weight.detach()[kept_tensor])
    setattr(parent, attribute, RemappedEmbedding(remap, smaller))
    return len(kept)


def quantize_embeddings(model: nn.Module) -> int:
    """Replace every nn.Embedding by an Int8Embedding; returns how many were replaced."""
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Embedding)
    ]
    for parent, name, child in targets:
        setattr(parent, name, Int8Embedding(child.weight))
    return len(targets)
