"""What a compression stage is judged by: quality, size, speed and how many weights are left.

Every stage is measured the same way on the same data so the report compares like with like:
accuracy and macro-F1 on the test split (macro-F1 because a model can keep its accuracy while it
gives up a small class), the bytes `torch.save` writes for the state dict (what a pod downloads),
latency at batch 1 (one request) and batch 32 (a busy server) with a fixed thread count (CPU
latency moves with the thread count more than with anything a stage does), the number of weights
and the fraction of them that are zero (what unstructured pruning changes, while it changes
neither size nor speed of a dense model).
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

#: Integer tensors in a state dict are indices (vocabulary remaps, position ids), not weights;
#: int8 ones are quantized weights stored as plain tensors.
_WEIGHT_DTYPES = frozenset({torch.int8, torch.qint8, torch.quint8, torch.qint32})


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds per forward pass."""

    batch1_p50_ms: float
    batch1_p99_ms: float
    batch32_p50_ms: float
    batch32_p99_ms: float


@dataclass(frozen=True, slots=True)
class Metrics:
    accuracy: float
    macro_f1: float
    #: Test examples the quality figures were computed on.
    samples: int
    size_bytes: int
    parameters: int
    #: Fraction of zeros among the weight matrices (tensors with two or more dimensions).
    sparsity: float
    latency: Latency

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MeasureSettings:
    threads: int = 2
    #: Timed forward passes per batch size, after `warmup` untimed ones.
    latency_runs: int = 30
    warmup: int = 3
    eval_batch_size: int = 64


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with exactly `threads` intra-op threads, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def predict(model: nn.Module, data: TensorDataset, batch_size: int = 64) -> torch.Tensor:
    """Predicted class ids for every example of `data` (items: *inputs, label)."""
    model.eval()
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
            out.append(model(*batch[:-1]).argmax(dim=-1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy_and_macro_f1(
    predicted: torch.Tensor, labels: torch.Tensor, num_labels: int
) -> tuple[float, float]:
    """Accuracy, and the unweighted mean of the per-class F1 over classes present in the labels
    or the predictions (a class absent from both has no F1 to average)."""
    if labels.numel() == 0:
        raise ValueError("cannot evaluate on an empty test set")
    accuracy = (predicted == labels).float().mean().item()
    f1s: list[float] = []
    for cls in range(num_labels):
        tp = int(((predicted == cls) & (labels == cls)).sum())
        fp = int(((predicted == cls) & (labels != cls)).sum())
        fn = int(((predicted != cls) & (labels == cls)).sum())
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return accuracy, sum(f1s) / len(f1s)


def _state_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    # Quantized Linear layers keep (weight, bias) packed in a tuple under `_packed_params`.
    for name, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, tuple | list):
            for index, item in enumerate(value):
                if isinstance(item, torch.Tensor):
                    yield f"{name}.{index}", item


def _is_weight(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() or tensor.dtype in _WEIGHT_DTYPES


def parameter_count(model: nn.Module) -> int:
    """Stored weights (float or int8) of the model, quantized ones included."""
    return sum(t.numel() for _, t in _state_tensors(model) if _is_weight(t))


def sparsity(model: nn.Module) -> float:
    """Fraction of zero entries among the weight matrices (>= 2 dimensions)."""
    zeros = total = 0
    for _, tensor in _state_tensors(model):
        if tensor.dim() < 2 or not _is_weight(tensor):
            continue
        values = tensor.dequantize() if tensor.is_quantized else tensor
        zeros += int((values == 0).sum())
        total += values.numel()
    return zeros / total if total else 0.0


def serialized_size(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); with few samples p99 is the slowest run."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _batch(data: TensorDataset, size: int) -> tuple[torch.Tensor, ...]:
    # Repeat the test set when it is smaller than the batch, so batch 32 is always 32.
    index = torch.arange(size) % len(data)
    return tuple(tensor[index] for tensor in data.tensors[:-1])


def time_forward(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], settings: MeasureSettings
) -> list[float]:
    """Milliseconds of each of `settings.latency_runs` forward passes."""
    model.eval()
    times: list[float] = []
    with torch_threads(settings.threads), torch.inference_mode():
        for _ in range(settings.warmup):
            model(*inputs)
        for _ in range(settings.latency_runs):
            started = time.perf_counter()
            model(*inputs)
            times.append((time.perf_counter() - started) * 1000)
    return times


def latency(model: nn.Module, data: TensorDataset, settings: MeasureSettings) -> Latency:
    one = time_forward(model, _batch(data, 1), settings)
    many = time_forward(model, _batch(data, 32), settings)
    return Latency(
        batch1_p50_ms=round(percentile(one, 50), 3),
        batch1_p99_ms=round(percentile(one, 99), 3),
        batch32_p50_ms=round(percentile(many, 50), 3),
        batch32_p99_ms=round(percentile(many, 99), 3),
    )


def compare_latency(
    models: Mapping[str, nn.Module], data: TensorDataset, settings: MeasureSettings
) -> dict[str, Latency]:
    """Latency of several models timed in turns (A, B, A, B, ...), so that load from other
    processes falls on all of them alike; the fair way to state a speedup on a shared machine."""
    times: dict[str, dict[int, list[float]]] = {name: {1: [], 32: []} for name in models}
    for model in models.values():
        model.eval()
    with torch_threads(settings.threads), torch.inference_mode():
        for size in (1, 32):
            inputs = _batch(data, size)
            for model in models.values():
                for _ in range(settings.warmup):
                    model(*inputs)
            for _ in range(settings.latency_runs):
                for name, model in models.items():
                    started = time.perf_counter()
                    model(*inputs)
                    times[name][size].append((time.perf_counter() - started) * 1000)
    return {
        name: Latency(
            batch1_p50_ms=round(percentile(runs[1], 50), 3),
            batch1_p99_ms=round(percentile(runs[1], 99), 3),
            batch32_p50_ms=round(percentile(runs[32], 50), 3),
            batch32_p99_ms=round(percentile(runs[32], 99), 3),
        )
        for name, runs in times.items()
    }


def measure(
    model: nn.Module, test: TensorDataset, num_labels: int, settings: MeasureSettings
) -> Metrics:
    """All figures of one model on `test`."""
    with torch_threads(settings.threads):
        predicted = predict(model, test, settings.eval_batch_size)
    accuracy, macro_f1 = accuracy_and_macro_f1(predicted, test.tensors[-1], num_labels)
    return Metrics(
        accuracy=round(accuracy, 6),
        macro_f1=round(macro_f1, 6),
        samples=len(test),
        size_bytes=serialized_size(model),
        parameters=parameter_count(model),
        sparsity=round(sparsity(model), 6),
        latency=latency(model, test, settings),
    )
