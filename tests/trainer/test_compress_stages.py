"""Each compression stage on small models built here: what it removes, and what it keeps."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from transformers import BertConfig, BertModel

from sparsam_trainer.compress import distill, embedding, prune, quantize
from sparsam_trainer.compress.evaluate import (
    Latency,
    MeasureSettings,
    Metrics,
    accuracy_and_macro_f1,
    compare_latency,
    parameter_count,
    percentile,
    serialized_size,
    sparsity,
)
from sparsam_trainer.compress.report import decide
from sparsam_trainer.tasks.mnist import MnistCnn

VOCAB = 50


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


class BnCnn(nn.Module):
    """Conv-BN-ReLU blocks and a Linear after a flatten: channels must be cut consistently."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(12 * 4 * 4, 3)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(torch.flatten(self.features(pixels), 1))
        return logits


class TinyClassifier(nn.Module):
    """The bbc-minilm task's layout (model.encoder: BertModel, model.head: Linear), tiny."""

    def __init__(self, encoder: BertModel) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        logits: torch.Tensor = self.head((hidden * weights).sum(1) / weights.sum(1))
        return logits


def tiny_bert(layers: int = 2) -> nn.Module:
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    return TinyClassifier(BertModel(config, add_pooling_layer=False)).eval()


def text_batch(size: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, VOCAB, (size, 8))
    mask = torch.ones_like(ids)
    mask[:, 6:] = 0
    return ids, mask, torch.arange(size) % 3


def pixels(size: int = 4, side: int = 8) -> torch.Tensor:
    return torch.rand(size, 1, side, side)


def test_global_magnitude_pruning_zeroes_weights_without_shrinking() -> None:
    model = MnistCnn()
    size = serialized_size(model)
    params = prune.global_magnitude_prune(model, 0.75)
    prune.make_permanent(params)
    weights = torch.cat([module.get_parameter("weight").flatten() for module, _ in params])
    assert (weights == 0).float().mean().item() == pytest.approx(0.75, abs=0.001)
    assert sparsity(model) == pytest.approx(0.75, abs=0.001)
    # Dense tensors: the zeros are stored like any other value.
    assert serialized_size(model) == pytest.approx(size, rel=0.01)


def test_pruning_masks_hold_during_fine_tune() -> None:
    model = MnistCnn()
    params = prune.global_magnitude_prune(model, 0.5)
    zero_before = [module.get_buffer("weight_mask") == 0 for module, _ in params]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = model(torch.rand(8, 1, 28, 28)).pow(2).sum()
    loss.backward()
    optimizer.step()
    prune.make_permanent(params)
    for (module, _), zeros in zip(params, zero_before, strict=True):
        assert (module.get_parameter("weight")[zeros] == 0).all()


@pytest.mark.parametrize(
    ("model", "side", "expected"),
    [
        (MnistCnn(), 28, {"features.0": (16, 8), "features.3": (32, 16)}),
        (BnCnn(), 8, {"features.0": (8, 4), "features.4": (12, 6)}),
    ],
    ids=["mnist-cnn", "conv-bn-relu"],
)
def test_channel_pruning_shrinks_tensors_and_keeps_the_interface(
    model: nn.Module, side: int, expected: dict[str, tuple[int, int]]
) -> None:
    model.eval()
    size, params = serialized_size(model), parameter_count(model)
    changed = prune.prune_conv_channels(model, 0.5)
    assert changed == expected
    assert model(pixels(2, side)).shape == (2, 3 if isinstance(model, BnCnn) else 10)
    # Half the channels: about a quarter of the conv weights, half of the head's.
    assert parameter_count(model) < params * 0.6
    assert serialized_size(model) < size


def test_channel_pruning_keeps_the_largest_filters() -> None:
    model = BnCnn().eval()
    conv = model.features[0]
    assert isinstance(conv, nn.Conv2d)
    with torch.no_grad():
        conv.weight.mul_(0.01)
        conv.weight[[1, 6]] = 1.0
    prune.prune_conv_channels(model, 0.75)
    assert conv.out_channels == 2
    assert (conv.weight == 1.0).all()


def test_channel_pruning_needs_a_conv() -> None:
    with pytest.raises(prune.PruningError, match="no conv layer"):
        prune.prune_conv_channels(nn.Sequential(nn.Linear(4, 2)), 0.5)


def test_heads_and_neurons_shrink_every_layer() -> None:
    model = tiny_bert()
    ids, mask, labels = text_batch()
    size = serialized_size(model)
    scores = prune.taylor_scores(
        model,
        [(ids, mask, labels)],
        lambda m, b: nn.functional.cross_entropy(m(*b[:-1]), b[-1]),
    )
    summary = prune.prune_heads_and_neurons(model, 0.5, 0.75, scores)
    assert (
        summary
        == [{"heads_before": 4, "heads_after": 2, "neurons_before": 64, "neurons_after": 16}] * 2
    )
    layers = prune.encoder_layers(model)
    assert layers is not None
    assert layers[0].get_parameter("attention.self.query.weight").shape == (16, 32)
    assert layers[0].get_parameter("attention.output.dense.weight").shape == (32, 16)
    assert model(ids, mask).shape == (4, 3)
    assert serialized_size(model) < size


def test_every_layer_keeps_one_head() -> None:
    model = tiny_bert(layers=1)
    summary = prune.prune_heads_and_neurons(model, 0.99, 0.99, {})
    assert summary[0]["heads_after"] == 1
    assert summary[0]["neurons_after"] == 1


def test_vocabulary_trim_keeps_seen_rows_and_maps_the_rest_to_unk() -> None:
    model = tiny_bert()
    ids, mask, _ = text_batch()
    seen = sorted(set(ids[:2].flatten().tolist()))
    before = model(ids[:2], mask[:2])
    unk = 1
    new_size = embedding.trim_vocabulary(model, seen, [unk, 0])
    assert new_size == len({*seen, unk, 0})
    assert torch.allclose(model(ids[:2], mask[:2]), before, atol=1e-5)
    words = model.get_submodule("encoder.embeddings.word_embeddings")
    unseen = next(i for i in range(VOCAB) if i not in seen and i not in (0, unk))
    assert torch.equal(words(torch.tensor([unseen])), words(torch.tensor([unk])))


def test_int8_embedding_is_close_and_nearly_four_times_smaller() -> None:
    table = nn.Embedding(1000, 64)
    quantized = embedding.Int8Embedding(table.weight)
    ids = torch.arange(1000)
    error = (quantized(ids) - table(ids)).abs().max().item()
    assert error <= table.weight.abs().max().item() / 127
    assert serialized_size(quantized) < serialized_size(table) / 3.5


def test_dynamic_quantization_captures_its_warnings() -> None:
    model = tiny_bert()
    ids, mask, _ = text_batch()
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        quantized, caught = quantize.dynamic_int8(model)
    assert not leaked
    assert any("deprecated" in message for message in caught)
    assert serialized_size(quantized) < serialized_size(model)
    assert torch.allclose(quantized(ids, mask), model(ids, mask), atol=0.1)


def test_static_quantization_runs_the_cnn_in_int8() -> None:
    model = MnistCnn().eval()
    batch = torch.rand(8, 1, 28, 28)
    quantized, _ = quantize.static_int8(model, [(batch,)])
    # int8 weights; torch.save's per-tensor overhead keeps a model this small above 1/4.
    assert serialized_size(quantized) < serialized_size(model) / 2.5
    assert quantized(batch).argmax(-1).tolist() == model(batch).argmax(-1).tolist()


@pytest.mark.parametrize(
    ("model", "inputs", "reason"),
    [
        (tiny_bert(), 2, "no kernels for Embedding, GELUActivation, LayerNorm$"),
        (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), 1, "no kernels for LayerNorm$"),
        (nn.Sequential(nn.Linear(4, 4)), 2, "takes 2 inputs"),
    ],
    ids=["bert", "layernorm", "two-inputs"],
)
def test_static_quantization_says_why_not(model: nn.Module, inputs: int, reason: str) -> None:
    with pytest.raises(quantize.StaticUnsupported, match=reason):
        quantize.check_static(model, inputs)


@pytest.mark.parametrize(
    ("teacher", "name", "check"),
    [
        (tiny_bert(4), "layers:2", lambda m: len(prune.encoder_layers(m) or []) == 2),
        (tiny_bert(4), "auto", lambda m: len(prune.encoder_layers(m) or []) == 2),
        (MnistCnn(), "width:0.25", lambda m: m.features[0].out_channels == 4),
        (MnistCnn(), "auto", lambda m: m.features[0].out_channels == 8),
    ],
    ids=["bert-layers", "bert-auto", "cnn-width", "cnn-auto"],
)
def test_students_are_cut_from_the_teacher(teacher: nn.Module, name: str, check: object) -> None:
    student = distill.make_student(teacher, name)
    assert callable(check) and check(student.model)
    assert serialized_size(student.model) < serialized_size(teacher)


@pytest.mark.parametrize(
    ("teacher", "name", "message"),
    [
        (tiny_bert(2), "width:0.5", "not known for an encoder model"),
        (tiny_bert(2), "layers:2", "the teacher has 2 layers"),
        (MnistCnn(), "layers:2", "not known for a CNN model"),
        (MnistCnn(), "s3://bucket/student", "not known for a CNN model"),
    ],
    ids=["width-on-bert", "as-many-layers", "layers-on-cnn", "uri"],
)
def test_unknown_students_are_named(teacher: nn.Module, name: str, message: str) -> None:
    with pytest.raises(distill.StudentError, match=message):
        distill.make_student(teacher, name)


def test_keeps_evenly_spaced_layers_with_the_last() -> None:
    assert distill.keep_layer_indices(6, 3) == [1, 3, 5]
    assert distill.keep_layer_indices(6, 2) == [2, 5]


@pytest.mark.parametrize(
    ("predicted", "labels", "expected"),
    [
        ([0, 1, 2, 2], [0, 1, 2, 2], (1.0, 1.0)),
        # Class 1 never predicted: F1 0 for it, which accuracy alone would hide.
        ([0, 0, 0, 0], [0, 0, 0, 1], (0.75, (6 / 7 + 0) / 2)),
        ([1, 0], [0, 1], (0.0, 0.0)),
    ],
    ids=["perfect", "small-class-lost", "all-wrong"],
)
def test_accuracy_and_macro_f1(
    predicted: list[int], labels: list[int], expected: tuple[float, float]
) -> None:
    got = accuracy_and_macro_f1(torch.tensor(predicted), torch.tensor(labels), 3)
    assert got == pytest.approx(expected)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile([3.0], 99)) == (
        50.0,
        99.0,
        3.0,
    )


def _metrics(accuracy: float) -> Metrics:
    return Metrics(accuracy, accuracy, 100, 1, 1, 0.0, Latency(1.0, 1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    ("before", "after", "budget", "accepted", "reason"),
    [
        (0.90, 0.895, 0.01, True, "drop of 0.0050 is within maxAccuracyDrop 0.01"),
        (0.90, 0.89, 0.01, True, "within"),
        (0.90, 0.85, 0.01, False, "accuracy 0.9000 -> 0.8500: a drop of 0.0500 is above"),
        (0.90, 0.89, 0.0, False, "above maxAccuracyDrop 0"),
        (0.90, 0.92, 0.0, True, "within"),
    ],
    ids=["small-drop", "at-budget", "over-budget", "zero-budget", "improved"],
)
def test_decision(before: float, after: float, budget: float, accepted: bool, reason: str) -> None:
    decision = decide(_metrics(before), _metrics(after), budget)
    assert decision.accepted is accepted
    assert reason in decision.reason


class Sleepy(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return pixels.flatten(1)[:, :3]


def test_latency_in_turns_times_each_model_at_both_batch_sizes() -> None:
    data = TensorDataset(pixels(5), torch.zeros(5, dtype=torch.long))
    settings = MeasureSettings(threads=1, latency_runs=3, warmup=1)
    result = compare_latency({"fast": Sleepy(0.0), "slow": Sleepy(0.01)}, data, settings)
    assert set(result) == {"fast", "slow"}
    assert result["slow"].batch1_p50_ms >= 10 > result["fast"].batch1_p50_ms
    assert result["slow"].batch32_p50_ms >= 10 > result["fast"].batch32_p50_ms


def test_vocabulary_size_reads_through_compression() -> None:
    model = tiny_bert()
    embedding.trim_vocabulary(model, [7, 8], [1])
    embedding.quantize_embeddings(model)
    assert embedding.vocabulary_size(model) == VOCAB
