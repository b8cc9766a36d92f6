"""The export format: what is exported predicts what the in-process model predicts, and broken
exports are refused with a message naming what is wrong."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.trainer import exported_models as tiny
from torch import nn

from sparsam_trainer.export import (
    FORMAT,
    ExportError,
    InvalidInstancesError,
    export_model,
    load_exported,
)

torch.set_num_threads(1)


def quantized(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def image_case(int8: bool) -> tuple[nn.Module, Callable[[nn.Module, Path], Path], list[Any], Any]:
    model = tiny.image_model()
    instances = tiny.images(4, seed=7)
    return (
        quantized(model) if int8 else model,
        tiny.export_image,
        list(instances),
        (tiny.pixels(instances),),
    )


def text_case(int8: bool) -> tuple[nn.Module, Callable[[nn.Module, Path], Path], list[Any], Any]:
    model = tiny.text_model()
    texts = [*tiny.TEXTS, "x " * 500]  # the last one is longer than max_length
    return quantized(model) if int8 else model, tiny.export_text, texts, tiny.tokenize(texts)


@pytest.mark.parametrize(
    ("make", "int8"),
    [(image_case, False), (text_case, False), (image_case, True), (text_case, True)],
    ids=["image", "text", "image-int8", "text-int8"],
)
def test_exported_model_predicts_like_the_model(
    tmp_path: Path, make: Callable[[bool], Any], int8: bool
) -> None:
    model, export, instances, inputs = make(int8)
    export(model, tmp_path)

    loaded = load_exported(tmp_path)
    with torch.no_grad():
        expected = model(*inputs)
    assert torch.allclose(loaded.logits(loaded.encode(instances)), expected, atol=1e-5)
    predictions = loaded.predict(instances)
    assert [p["index"] for p in predictions] == expected.argmax(-1).tolist()
    assert [p["label"] for p in predictions] == [loaded.labels[i] for i in expected.argmax(-1)]
    assert all(abs(sum(p["scores"]) - 1.0) < 1e-5 for p in predictions)
    assert len({tuple(p["scores"]) for p in predictions}) > 1, "inputs should give distinct scores"


def test_quantized_export_holds_int8_weights(tmp_path: Path) -> None:
    """Compression exports through the same call; the int8 layers must survive tracing."""
    model = tiny.text_model()
    tiny.export_text(model, tmp_path / "fp32")
    tiny.export_text(quantized(model), tmp_path / "int8")

    graph = str(load_exported(tmp_path / "int8").module.inlined_graph)
    assert "quantized::linear_dynamic" in graph
    assert "quantized::linear_dynamic" not in str(
        load_exported(tmp_path / "fp32").module.inlined_graph
    )


def test_manifest_describes_the_export(tmp_path: Path) -> None:
    tiny.export_text(tiny.text_model(), tmp_path)

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == FORMAT
    assert manifest["task"] == "tiny-text"
    assert manifest["labels"] == list(tiny.TEXT_LABELS)
    assert manifest["inputs"] == {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 128}
    assert manifest["metrics"] == {"accuracy": 0.5}
    assert set(manifest["files"]) == {"model.ts", "tokenizer.json"}
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (tmp_path / name).stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "model.ts",
        "tokenizer.json",
    ]


def test_tokenizer_may_be_named_in_input_files(tmp_path: Path) -> None:
    """A task's spec names the tokenizer by file name; the caller maps the name to the file."""
    spec = {**tiny.TEXT_SPEC, "tokenizer": "tokenizer.json"}
    export_model(
        tiny.text_model(),
        "tiny-text",
        tiny.TEXT_LABELS,
        spec,
        tiny.tokenize(list(tiny.TEXTS[:2])),
        {},
        tmp_path,
        input_files={"tokenizer.json": tiny.TOKENIZER_PATH},
    )
    assert load_exported(tmp_path).predict(["hello"])[0]["label"] in tiny.TEXT_LABELS


def _rewrite_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        path = directory / "manifest.json"
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))

    return apply


def _corrupt_model(directory: Path) -> None:
    data = bytearray((directory / "model.ts").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (directory / "model.ts").write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "manifest.json").unlink(), "no manifest.json; not a sparsam model export"),
        (lambda d: (d / "manifest.json").write_text("{"), "manifest.json: cannot read"),
        (
            _rewrite_manifest(lambda m: m.update(format="onnx/v1")),
            "unsupported format 'onnx/v1'",
        ),
        (
            _rewrite_manifest(lambda m: m["inputs"].update(kind="audio")),
            "inputs.kind: unknown kind 'audio'",
        ),
        (
            _rewrite_manifest(lambda m: m["inputs"].update(max_length="long")),
            "inputs.max_length: expected an integer",
        ),
        (_rewrite_manifest(lambda m: m.pop("labels")), "labels: expected a list"),
        (
            _rewrite_manifest(lambda m: m.update(labels=["a", "a"])),
            "class names must be unique",
        ),
        (
            _rewrite_manifest(lambda m: m["files"].pop("tokenizer.json")),
            "tokenizer.json is not listed",
        ),
        (
            lambda d: (d / "tokenizer.json").unlink(),
            "tokenizer.json is listed in manifest.json but missing",
        ),
        (lambda d: (d / "model.ts").write_bytes(b"x"), "the export is incomplete or was changed"),
        (_corrupt_model, "sha256 differs from manifest.json"),
    ],
    ids=[
        "no-manifest",
        "manifest-not-json",
        "unknown-format",
        "unknown-kind",
        "bad-max-length",
        "no-labels",
        "duplicate-labels",
        "tokenizer-not-listed",
        "tokenizer-missing",
        "model-truncated",
        "model-corrupt",
    ],
)
def test_broken_exports_are_refused_by_name(
    tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    tiny.export_text(tiny.text_model(), tmp_path)
    damage(tmp_path)

    with pytest.raises(ExportError, match=message.replace("(", r"\(")):
        load_exported(tmp_path)


class FrozenBatch(nn.Module):
    """Reads the batch size as a Python int, which a trace records as a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(784, 3)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(pixels.reshape(int(pixels.shape[0]), 784))


class BrightnessBranch(nn.Module):
    """Branches in Python on the batch's brightness, which a trace freezes to the example's."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(784, 3)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.head(pixels.flatten(1))
        return logits if bool(pixels.mean() > 0.75) else -logits


def _export(
    model: nn.Module, *, spec: dict[str, Any] | None = None, **kwargs: Any
) -> Callable[[Path], Path]:
    args: dict[str, Any] = {
        "task_name": "tiny-image",
        "labels": tiny.IMAGE_LABELS,
        "input_spec": spec or tiny.IMAGE_SPEC,
        # A bright first image and a dark second one, so a data-dependent branch differs.
        "example_inputs": (torch.stack([torch.ones(1, 28, 28), torch.zeros(1, 28, 28)]),),
        "metrics": {},
    } | kwargs
    return lambda out_dir: export_model(model, out_dir=out_dir, **args)


@pytest.mark.parametrize(
    ("export", "message"),
    [
        (_export(tiny.image_model(), labels=("one",)), "labels: expected a list of at least two"),
        (_export(tiny.image_model(), labels=("a", "b")), r"must return logits \[batch, 2\]"),
        (
            _export(tiny.image_model(), spec={"kind": "image", "shape": [28, "28"], "scale": 1}),
            "input_spec.shape: expected a list of positive integers",
        ),
        (
            _export(
                tiny.text_model(),
                spec={**tiny.TEXT_SPEC, "tokenizer": "nowhere.json"},
                example_inputs=tiny.tokenize(["a", "b"]),
            ),
            "input_spec.tokenizer: 'nowhere.json' is not a file",
        ),
        (
            _export(tiny.image_model(), example_inputs=(torch.zeros(2, 1, 28, 28),) * 2),
            "image models take 1 tensor",
        ),
        (
            _export(tiny.image_model(), metrics={"accuracy": float("nan")}),
            "metrics: not JSON-serialisable",
        ),
        (_export(FrozenBatch()), "fails on a batch of 1"),
        (_export(BrightnessBranch()), "disagrees with the model on a batch of 1"),
    ],
    ids=[
        "one-label",
        "labels-not-logits",
        "bad-shape",
        "missing-tokenizer",
        "wrong-input-count",
        "nan-metric",
        "frozen-batch-size",
        "data-dependent-branch",
    ],
)
def test_unexportable_models_are_refused_by_name(
    tmp_path: Path, export: Callable[[Path], Path], message: str
) -> None:
    with pytest.raises(ExportError, match=message):
        export(tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_reexport_replaces_the_previous_export(tmp_path: Path) -> None:
    tiny.export_image(tiny.image_model(seed=1), tmp_path)
    second = tiny.image_model(seed=2)
    tiny.export_image(second, tmp_path)

    instances = tiny.images(2)
    with torch.no_grad():
        expected = second(tiny.pixels(instances))
    loaded = load_exported(tmp_path)
    assert torch.allclose(loaded.logits(loaded.encode(instances)), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([], "no instances"),
        (["text"], r"instances\[0\]: expected a list of 784 pixel values"),
        ([[0] * 783], r"got shape \[783\]"),
        ([[[0] * 28] * 27], r"got shape \[27, 28\]"),
        ([[0] * 784, [0] * 783 + [256]], r"instances\[1\]: .* between 0 and 255, found 256"),
        ([[-1] * 784], "found -1"),
        ([[0] * 783 + ["0"]], "found a non-number or a ragged list"),
        ([[[0] * 28] * 27 + [[0] * 27]], "found a non-number or a ragged list"),
    ],
    ids=[
        "empty",
        "string",
        "short",
        "wrong-shape",
        "too-bright",
        "negative",
        "string-pixel",
        "ragged",
    ],
)
def test_image_instances_that_do_not_fit_are_named(
    tmp_path: Path, instances: list[Any], message: str
) -> None:
    loaded = load_exported(tiny.export_image(tiny.image_model(), tmp_path))
    with pytest.raises(InvalidInstancesError, match=message):
        loaded.encode(instances)


def test_image_instances_may_be_flat_or_nested(tmp_path: Path) -> None:
    loaded = load_exported(tiny.export_image(tiny.image_model(), tmp_path))
    image = tiny.images(1)[0]
    flat = [value for row in image[0] for value in row]
    encoded = [loaded.encode([instance])[0] for instance in (image, image[0], flat)]
    assert all(torch.equal(encoded[0], other) for other in encoded[1:])
