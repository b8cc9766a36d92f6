"""The built-in tasks honour the task contract: fixed stratified splits and encoders that turn
raw request instances into exactly the tensors the models take."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from sparsam_trainer.tasks import TASK_NAMES, get_task
from sparsam_trainer.tasks.base import Splits, stratified_indices


def _labels(splits: Splits) -> list[torch.Tensor]:
    return [part.tensors[-1] for part in (splits.train, splits.validation, splits.test)]


def test_unknown_task_is_a_value_error_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known tasks: mnist-cnn, bbc-minilm"):
        get_task("resnet")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_splits_are_deterministic_disjoint_and_stratified(name: str) -> None:
    task = get_task(name)
    first, again, other_seed = task.splits(0), task.splits(0), task.splits(1)
    for a, b in zip(_labels(first), _labels(again), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(first.train.tensors, again.train.tensors, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.train.tensors[0], other_seed.train.tensors[0])

    train, validation, test = _labels(first)
    total = len(train) + len(validation) + len(test)
    assert len(train) / total == pytest.approx(0.70, abs=0.01)
    assert len(validation) / total == pytest.approx(0.15, abs=0.01)
    num_labels = len(task.labels)
    overall = torch.bincount(torch.cat(_labels(first)), minlength=num_labels) / total
    for part in (train, validation, test):
        share = torch.bincount(part, minlength=num_labels) / len(part)
        assert torch.allclose(share, overall, atol=0.01), name


def test_stratified_indices_partition_every_sample_once() -> None:
    labels = np.repeat(np.arange(4, dtype=np.int64), [10, 20, 33, 7])
    parts = stratified_indices(labels, seed=3)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))
    for cls, count in enumerate([10, 20, 33, 7]):
        assert (labels[parts[0]] == cls).sum() == round(count * 0.7)


@pytest.mark.parametrize(
    ("instances", "shape"),
    [
        ([[0] * 784], (1, 1, 28, 28)),
        ([[[255] * 28] * 28, [[[0] * 28] * 28]], (2, 1, 28, 28)),
    ],
    ids=["flat", "nested-2d-and-3d"],
)
def test_mnist_encode(instances: list[Any], shape: tuple[int, ...]) -> None:
    (pixels,) = get_task("mnist-cnn").encode(instances)
    assert pixels.shape == shape
    assert pixels.dtype == torch.float32
    assert 0.0 <= float(pixels.min()) <= float(pixels.max()) <= 1.0


def test_mnist_encode_matches_training_data_scale() -> None:
    task = get_task("mnist-cnn")
    image = task.splits(0).test.tensors[0][0]
    raw = (image * 255).round().flatten().tolist()
    assert torch.allclose(task.encode([raw])[0][0], image, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "instances", "message"),
    [
        ("mnist-cnn", [[1, 2, 3]], "instance 0: expected 784 pixel values"),
        ("mnist-cnn", [[0] * 784, "a cat"], "instance 1"),
        ("mnist-cnn", [], "no instances"),
        ("bbc-minilm", ["fine", 7], "instance 1: expected a string, got int"),
    ],
    ids=["mnist-too-short", "mnist-not-numbers", "mnist-empty", "bbc-not-a-string"],
)
def test_encode_rejects_bad_instances(name: str, instances: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_task(name).encode(instances)


def test_bbc_encode_pads_and_truncates_to_128_tokens() -> None:
    ids, mask = get_task("bbc-minilm").encode(["short text", "word " * 500])
    assert ids.shape == mask.shape == (2, 128)
    assert ids.dtype == mask.dtype == torch.int64
    assert 0 < int(mask[0].sum()) < 10
    assert int(mask[1].sum()) == 128


@pytest.mark.parametrize("name", TASK_NAMES)
def test_model_takes_encoded_inputs_and_returns_logits(name: str) -> None:
    task = get_task(name)
    torch.manual_seed(0)
    model = task.build_model().eval()
    instances: list[Any] = (
        ["Shares rose after the bank cut interest rates.", "The striker scored twice."]
        if name == "bbc-minilm"
        else [[0] * 784, [128] * 784]
    )
    inputs = task.encode(instances)
    assert len(inputs) == len(task.input_names)
    with torch.no_grad():
        logits = model(*inputs)
    assert logits.shape == (2, len(task.labels))


def test_bbc_model_exposes_encoder_and_head_for_compression() -> None:
    model = get_task("bbc-minilm").build_model()
    assert type(model.encoder).__name__ == "BertModel"
    assert isinstance(model.head, torch.nn.Linear)
    assert model.head.out_features == 5
    # No pooler: mean pooling does not use it and DDP rejects parameters without gradients.
    assert getattr(model.encoder, "pooler", None) is None
