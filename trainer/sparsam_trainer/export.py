"""The export format: one directory that holds everything a model server needs, and nothing else.

Training and compression both end by calling `export_model`; the model server (and the tests) only
ever call `load_exported`. The directory holds:

- ``model.ts``: the model as TorchScript, traced with example inputs. Tracing (rather than
  pickling a state dict) means the server needs neither the task's Python code nor transformers,
  and it captures dynamically quantized ``Linear`` layers as they are, so a compressed model is
  exported exactly like a trained one.
- ``manifest.json``, written last, so a directory with a manifest is a complete export::

      {"format": "sparsam.model/v1", "task": "bbc-minilm", "labels": ["business", ...],
       "inputs": {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 128},
       "metrics": {"accuracy": 0.97, ...}, "torch_version": "2.13.0",
       "files": {"model.ts": {"bytes": 58857849, "sha256": "..."}, "tokenizer.json": {...}}}

- whatever the input spec needs to turn raw request instances into tensors (``tokenizer.json``).

Input spec kinds, which say what a raw JSON instance is:

- ``{"kind": "image", "shape": [1, 28, 28], "scale": 255.0}``: a list of pixel values in
  ``0..scale``, flat or nested to ``shape``; the model gets float32 ``[B, *shape] / scale``.
- ``{"kind": "text", "tokenizer": "tokenizer.json", "max_length": 128}``: a string; the model gets
  ``input_ids`` and ``attention_mask``, int64 ``[B, max_length]`` (truncated and padded).

Problems with a directory raise `ExportError`; instances that do not fit the input spec raise
`InvalidInstancesError`. Both messages name what is wrong, so the server can pass them on as
they are.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypedDict

import torch
from tokenizers import Tokenizer

FORMAT = "sparsam.model/v1"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.ts"
TOKENIZER_FILE = "tokenizer.json"

# TorchScript is deprecated in favour of torch.export, which cannot yet hold the packed weights of
# dynamically quantized layers; until it can, its notices are noise in every job's log.
_TORCHSCRIPT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"

#: Longest text instance accepted, in characters. The model reads only its first `max_length`
#: tokens, but the tokenizer reads the whole string first (a 10 MB string took 13 s and 760 MB):
#: the bound keeps a request's work small (64 texts this long tokenize in about 0.6 s on one
#: core) and is above the longest article of the BBC corpus (25,485 characters).
MAX_TEXT_CHARS = 32_000

# Traced and eager outputs are computed by the same kernels in the same order, so they agree to
# float rounding; a larger gap means the trace froze a shape or a branch.
_TRACE_RTOL = 1e-4
_TRACE_ATOL = 1e-5


class ExportError(Exception):
    """An export cannot be written or read; the message names the file or field at fault."""


class InvalidInstancesError(ValueError):
    """Request instances do not fit the model's input spec; the message is meant for the client."""


class Prediction(TypedDict):
    label: str
    index: int
    scores: list[float]


# --- input specs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInput:
    """Pixel lists in ``0..scale``, flat or nested to ``shape``."""

    shape: tuple[int, ...]
    scale: float

    def to_json(self) -> dict[str, Any]:
        return {"kind": "image", "shape": list(self.shape), "scale": self.scale}


@dataclass(frozen=True)
class TextInput:
    """Strings, tokenized with ``tokenizer`` (a file name inside the export) to ``max_length``."""

    tokenizer: str
    max_length: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": "text", "tokenizer": self.tokenizer, "max_length": self.max_length}


InputSpec = ImageInput | TextInput


def parse_input_spec(raw: object, where: str = "inputs") -> InputSpec:
    """Read an input spec from its JSON form; `where` prefixes error messages."""
    if not isinstance(raw, Mapping):
        raise ExportError(f"{where}: expected an object, got {json_type(raw)}")
    kind = raw.get("kind")
    if kind == "image":
        shape = raw.get("shape")
        if (
            not isinstance(shape, list)
            or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        ):
            raise ExportError(f"{where}.shape: expected a list of positive integers, got {shape!r}")
        scale = raw.get("scale")
        if (
            not isinstance(scale, int | float)
            or isinstance(scale, bool)
            or not math.isfinite(scale)
            or scale <= 0
        ):
            raise ExportError(f"{where}.scale: expected a positive number, got {scale!r}")
        return ImageInput(shape=tuple(shape), scale=float(scale))
    if kind == "text":
        tokenizer = raw.get("tokenizer")
        if not isinstance(tokenizer, str) or not tokenizer:
            raise ExportError(f"{where}.tokenizer: expected a file name, got {tokenizer!r}")
        max_length = raw.get("max_length")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ExportError(f"{where}.max_length: expected an integer >= 2, got {max_length!r}")
        return TextInput(tokenizer=tokenizer, max_length=max_length)
    raise ExportError(f'{where}.kind: unknown kind {kind!r}; expected "image" or "text"')


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages a client can act on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


# --- instance encoders -------------------------------------------------------------------------


class InstanceEncoder(Protocol):
    def encode(self, instances: Sequence[object]) -> tuple[torch.Tensor, ...]: ...

    def example(self) -> object: ...


class ImageEncoder:
    def __init__(self, spec: ImageInput) -> None:
        self._spec = spec
        self._size = math.prod(spec.shape)
        # Accept the full shape, the shape without leading 1s ([28, 28] for [1, 28, 28]) and a
        # flat list; anything else is more likely a mistake than a layout choice.
        accepted = {spec.shape, (self._size,)}
        trimmed = spec.shape
        while len(trimmed) > 1 and trimmed[0] == 1:
            trimmed = trimmed[1:]
            accepted.add(trimmed)
        self._accepted = accepted

    def encode(self, instances: Sequence[object]) -> tuple[torch.Tensor, ...]:
        pixels = [self._pixels(index, instance) for index, instance in enumerate(instances)]
        return (torch.stack(pixels) / self._spec.scale,)

    def example(self) -> object:
        return [0.0] * self._size

    def _pixels(self, index: int, instance: object) -> torch.Tensor:
        self._check_layout(index, instance)
        try:
            values = torch.tensor(instance, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise InvalidInstancesError(
                f"instances[{index}]: pixel values must be between 0 and {self._spec.scale:g}, "
                "found a number too large for float32"
            ) from None
        # NaN fails both comparisons, so it is reported as out of range too.
        outside = ~((values >= 0) & (values <= self._spec.scale))
        if bool(outside.any()):
            found = float(values[outside][0])
            raise InvalidInstancesError(
                f"instances[{index}]: pixel values must be between 0 and {self._spec.scale:g}, "
                f"found {found:g}"
            )
        return values.reshape(self._spec.shape)

    def _check_layout(self, index: int, instance: object) -> None:
        """InvalidInstancesError unless `instance` is nested lists of one accepted shape with
        numbers (not booleans: JSON's true is no pixel) at the bottom. The work is bounded by
        the model's input size, whatever the client sent."""
        expected = f"a list of {self._size} pixel values (shape {list(self._spec.shape)})"
        if not isinstance(instance, list):
            raise InvalidInstancesError(
                f"instances[{index}]: expected {expected}, got {json_type(instance)}"
            )
        # The shape along the first elements; one level deeper than any accepted is enough to
        # say it is wrong.
        deepest = max(len(shape) for shape in self._accepted)
        shape: list[int] = []
        node: object = instance
        while isinstance(node, list) and len(shape) <= deepest:
            shape.append(len(node))
            if not node:
                break
            node = node[0]
        if tuple(shape) not in self._accepted:
            raise InvalidInstancesError(
                f"instances[{index}]: expected {expected}, got shape {shape}"
                + (" or deeper" if len(shape) > deepest else "")
            )
        # Every list as long as its first sibling, every leaf a number.
        stack: list[tuple[object, int]] = [(instance, 0)]
        while stack:
            node, depth = stack.pop()
            if depth == len(shape):
                if type(node) not in (int, float):
                    raise InvalidInstancesError(
                        f"instances[{index}]: expected {expected}; found a non-number or a "
                        f"ragged list ({json_type(node)} where a pixel value belongs)"
                    )
            elif not isinstance(node, list) or len(node) != shape[depth]:
                raise InvalidInstancesError(
                    f"instances[{index}]: expected {expected}; found a non-number or a "
                    f"ragged list ({_found(node)} where a list of {shape[depth]} belongs)"
                )
            else:
                stack.extend((child, depth + 1) for child in node)


def _found(node: object) -> str:
    return f"a list of {len(node)}" if isinstance(node, list) else f"a {json_type(node)}"


class TextEncoder:
    def __init__(
        self, tokenizer: Tokenizer, max_length: int, max_chars: int = MAX_TEXT_CHARS
    ) -> None:
        self._max_chars = max_chars
        # The export fixes the sequence length; the tokenizer file's own settings may differ.
        padding = tokenizer.padding
        pad_id, pad_token = (padding["pad_id"], padding["pad_token"]) if padding else (0, "[PAD]")
        tokenizer.enable_truncation(max_length)
        tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token=pad_token)
        self._tokenizer = tokenizer

    def encode(self, instances: Sequence[object]) -> tuple[torch.Tensor, ...]:
        texts: list[str] = []
        for index, instance in enumerate(instances):
            if not isinstance(instance, str):
                raise InvalidInstancesError(
                    f"instances[{index}]: expected a string, got {json_type(instance)}"
                )
            if len(instance) > self._max_chars:
                raise InvalidInstancesError(
                    f"instances[{index}]: the text has {len(instance)} characters; at most "
                    f"{self._max_chars} are accepted"
                )
            try:
                instance.encode("utf-8")
            except UnicodeEncodeError as error:
                # JSON's \ud800 escapes decode to a lone surrogate, which is no character.
                raise InvalidInstancesError(
                    f"instances[{index}]: not valid Unicode at character {error.start} "
                    "(a lone UTF-16 surrogate)"
                ) from None
            texts.append(instance)
        encodings = self._tokenizer.encode_batch(texts)
        input_ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64)
        attention_mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64)
        return input_ids, attention_mask

    def example(self) -> object:
        return "warm-up"


# --- the manifest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    task: str
    labels: tuple[str, ...]
    inputs: InputSpec
    metrics: dict[str, Any]
    files: dict[str, FileEntry]
    torch_version: str

    @property
    def size_bytes(self) -> int:
        """Bytes of every file the model needs, which is what a compression ratio compares."""
        return sum(entry.bytes for entry in self.files.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "task": self.task,
            "labels": list(self.labels),
            "inputs": self.inputs.to_json(),
            "metrics": self.metrics,
            "torch_version": self.torch_version,
            "files": {
                name: {"bytes": entry.bytes, "sha256": entry.sha256}
                for name, entry in sorted(self.files.items())
            },
        }

    @classmethod
    def from_json(cls, raw: object) -> Manifest:
        if not isinstance(raw, Mapping):
            raise ExportError(f"{MANIFEST_FILE}: expected a JSON object, got {json_type(raw)}")
        fmt = raw.get("format")
        if fmt != FORMAT:
            raise ExportError(f"{MANIFEST_FILE}: unsupported format {fmt!r}; expected {FORMAT!r}")
        task = raw.get("task")
        if not isinstance(task, str) or not task:
            raise ExportError(f"{MANIFEST_FILE}: task: expected a non-empty string")
        labels = _labels(raw.get("labels"), f"{MANIFEST_FILE}: labels")
        inputs = parse_input_spec(raw.get("inputs"), f"{MANIFEST_FILE}: inputs")
        metrics = raw.get("metrics", {})
        if not isinstance(metrics, dict):
            raise ExportError(f"{MANIFEST_FILE}: metrics: expected an object")
        files_raw = raw.get("files")
        if not isinstance(files_raw, Mapping):
            raise ExportError(f"{MANIFEST_FILE}: files: expected an object")
        files: dict[str, FileEntry] = {}
        for name, entry in files_raw.items():
            if (
                not isinstance(entry, Mapping)
                or not isinstance(entry.get("bytes"), int)
                or not isinstance(entry.get("sha256"), str)
            ):
                raise ExportError(
                    f'{MANIFEST_FILE}: files.{name}: expected {{"bytes": int, "sha256": str}}'
                )
            files[name] = FileEntry(bytes=entry["bytes"], sha256=entry["sha256"])
        needed = [MODEL_FILE] + ([inputs.tokenizer] if isinstance(inputs, TextInput) else [])
        for name in needed:
            if name not in files:
                raise ExportError(f"{MANIFEST_FILE}: files: {name} is not listed")
        return cls(
            task=task,
            labels=labels,
            inputs=inputs,
            metrics=metrics,
            files=files,
            torch_version=str(raw.get("torch_version", "")),
        )


def _labels(raw: object, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple) or len(raw) < 2:
        raise ExportError(f"{where}: expected a list of at least two class names")
    if not all(isinstance(label, str) and label for label in raw):
        raise ExportError(f"{where}: every class name must be a non-empty string")
    if len(set(raw)) != len(raw):
        raise ExportError(f"{where}: class names must be unique, got {list(raw)}")
    return tuple(raw)


def read_manifest(model_dir: Path) -> Manifest:
    """Read and check a manifest and that its files exist; cheap, so a server can fail fast."""
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir}: not a directory")
    path = model_dir / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{model_dir}: no {MANIFEST_FILE}; not a sparsam model export") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{path}: cannot read: {error}") from None
    manifest = Manifest.from_json(raw)
    for name, entry in manifest.files.items():
        file = model_dir / name
        if not file.is_file():
            raise ExportError(f"{model_dir}: {name} is listed in {MANIFEST_FILE} but missing")
        if file.stat().st_size != entry.bytes:
            raise ExportError(
                f"{file}: {file.stat().st_size} bytes, {MANIFEST_FILE} says {entry.bytes}; "
                "the export is incomplete or was changed"
            )
    return manifest


# --- loading -----------------------------------------------------------------------------------


class ExportedModel:
    """A loaded export: turns raw JSON instances into predictions. Not thread-safe by design:
    the server runs it on one inference thread."""

    def __init__(
        self, manifest: Manifest, module: torch.jit.ScriptModule, encoder: InstanceEncoder
    ) -> None:
        self.manifest = manifest
        self._module = module
        self._encoder = encoder

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def module(self) -> torch.jit.ScriptModule:
        """The TorchScript module, for measuring it (latency, graph) apart from encoding."""
        return self._module

    def encode(self, instances: Sequence[object]) -> tuple[torch.Tensor, ...]:
        """Raw instances to model inputs; raises InvalidInstancesError naming the bad instance."""
        if not instances:
            raise InvalidInstancesError("no instances to predict")
        return self._encoder.encode(instances)

    def logits(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.inference_mode():
            output = self._module(*inputs)
        if not isinstance(output, torch.Tensor) or output.shape != (
            inputs[0].shape[0],
            len(self.labels),
        ):
            shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ExportError(
                f"{MODEL_FILE}: returned {shape}, expected logits "
                f"[{inputs[0].shape[0]}, {len(self.labels)}]"
            )
        return output

    def predict(self, instances: Sequence[object]) -> list[Prediction]:
        scores = torch.softmax(self.logits(self.encode(instances)).float(), dim=-1)
        best = scores.argmax(dim=-1).tolist()
        return [
            {"label": self.labels[index], "index": index, "scores": row}
            for index, row in zip(best, scores.tolist(), strict=True)
        ]

    def example_instance(self) -> object:
        """A valid instance, for warming the model up before the server reports ready."""
        return self._encoder.example()


def load_exported(model_dir: Path, *, max_text_chars: int = MAX_TEXT_CHARS) -> ExportedModel:
    """Load an export written by `export_model`, checking every file against the manifest.

    `max_text_chars`: the longest text instance a text model accepts."""
    manifest = read_manifest(model_dir)
    for name, entry in manifest.files.items():
        if _sha256(model_dir / name) != entry.sha256:
            raise ExportError(
                f"{model_dir / name}: sha256 differs from {MANIFEST_FILE}; the file is corrupt or "
                "was changed after export"
            )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _TORCHSCRIPT_DEPRECATED, DeprecationWarning)
            module = torch.jit.load(  # type: ignore[no-untyped-call]
                str(model_dir / MODEL_FILE), map_location="cpu"
            )
    except RuntimeError as error:
        raise ExportError(f"{model_dir / MODEL_FILE}: not loadable TorchScript: {error}") from None
    module.eval()
    return ExportedModel(manifest, module, _encoder(manifest.inputs, model_dir, max_text_chars))


def _encoder(spec: InputSpec, base: Path, max_text_chars: int) -> InstanceEncoder:
    if isinstance(spec, ImageInput):
        return ImageEncoder(spec)
    path = base / spec.tokenizer
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises bare Exception for unreadable files
        raise ExportError(f"{path}: not a tokenizers tokenizer.json: {error}") from None
    return TextEncoder(tokenizer, spec.max_length, max_text_chars)


# --- exporting ---------------------------------------------------------------------------------


def export_model(
    model: torch.nn.Module,
    task_name: str,
    labels: Sequence[str],
    input_spec: Mapping[str, Any],
    example_inputs: tuple[torch.Tensor, ...],
    metrics: Mapping[str, Any],
    out_dir: Path,
    *,
    input_files: Mapping[str, Path] | None = None,
) -> Path:
    """Trace `model` and write it, its manifest and its input files to `out_dir`.

    For text, the spec's ``tokenizer`` names the tokenizer file: either a path to it, or a name
    that `input_files` maps to a path (``{"tokenizer.json": task_tokenizer_path}``); it is copied
    in as ``tokenizer.json``. `example_inputs` should be a batch of at least two real inputs: the
    trace is checked against the eager model on them and on their first row alone, which catches
    a trace that froze the batch size. A model that is already TorchScript (``torch.jit.script``,
    for data-dependent control flow a trace cannot capture) is checked and saved as it is.
    Returns `out_dir`.
    """
    if not task_name:
        raise ExportError("task_name: expected a non-empty string")
    label_tuple = _labels(list(labels), "labels")
    spec = parse_input_spec(input_spec, "input_spec")
    expected_inputs = 1 if isinstance(spec, ImageInput) else 2
    if len(example_inputs) != expected_inputs or not all(
        isinstance(t, torch.Tensor) for t in example_inputs
    ):
        raise ExportError(
            f"example_inputs: {spec.to_json()['kind']} models take {expected_inputs} tensor(s), "
            f"got {len(example_inputs)}"
        )
    try:
        metrics_json: dict[str, Any] = json.loads(json.dumps(dict(metrics), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ExportError(f"metrics: not JSON-serialisable: {error}") from None
    tokenizer_source: Path | None = None
    if isinstance(spec, TextInput):
        tokenizer_source = Path((input_files or {}).get(spec.tokenizer, spec.tokenizer))
        if not tokenizer_source.is_file():
            raise ExportError(
                f"input_spec.tokenizer: {spec.tokenizer!r} is not a file; give its path, or "
                f"pass input_files={{{spec.tokenizer!r}: path}}"
            )
        # Fail here rather than in the server: the file must be a tokenizer we can load.
        _encoder(
            TextInput(tokenizer_source.name, spec.max_length),
            tokenizer_source.parent,
            MAX_TEXT_CHARS,
        )
        spec = TextInput(tokenizer=TOKENIZER_FILE, max_length=spec.max_length)
    traced = _trace(model, example_inputs, len(label_tuple))

    out_dir.mkdir(parents=True, exist_ok=True)
    # Until the new manifest lands, the directory is not an export, rather than an old manifest
    # describing new files.
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    files: dict[str, FileEntry] = {}
    if tokenizer_source is not None:
        source = tokenizer_source
        _atomic_write(out_dir / TOKENIZER_FILE, lambda tmp: shutil.copyfile(source, tmp))
        files[TOKENIZER_FILE] = _entry(out_dir / TOKENIZER_FILE)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _TORCHSCRIPT_DEPRECATED, DeprecationWarning)
        _atomic_write(out_dir / MODEL_FILE, lambda tmp: torch.jit.save(traced, str(tmp)))
    files[MODEL_FILE] = _entry(out_dir / MODEL_FILE)

    manifest = Manifest(
        task=task_name,
        labels=label_tuple,
        inputs=spec,
        metrics=metrics_json,
        files=files,
        torch_version=torch.__version__,
    )
    text = json.dumps(manifest.to_json(), indent=2) + "\n"
    _atomic_write(out_dir / MANIFEST_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out_dir


def _trace(
    model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], num_labels: int
) -> torch.jit.ScriptModule:
    traced: torch.jit.ScriptModule
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Tracer warnings flag Python-level branches that may not generalise; the checks
            # below test that directly, so the warnings would only be noise in job logs.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
            warnings.filterwarnings("ignore", _TORCHSCRIPT_DEPRECATED, DeprecationWarning)
            # transformers 5 asks every module this while it is traced; it is not ours to fix.
            warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*", FutureWarning)
            if isinstance(model, torch.jit.ScriptModule):
                traced = model
            else:
                try:
                    traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                        model, example_inputs, check_trace=False
                    )
                except Exception as error:  # tracing raises many types; all mean "cannot export"
                    raise ExportError(f"cannot trace the model: {error}") from None
            first_rows = tuple(t[:1] for t in example_inputs)
            for inputs in (example_inputs, first_rows):
                expected = model(*inputs)
                try:
                    actual = traced(*inputs)
                except RuntimeError as error:
                    raise ExportError(
                        f"the traced model fails on a batch of {inputs[0].shape[0]}: {error}; "
                        "it likely froze a shape from the example inputs"
                    ) from None
                if not isinstance(expected, torch.Tensor) or expected.shape != (
                    inputs[0].shape[0],
                    num_labels,
                ):
                    raise ExportError(
                        f"the model must return logits [batch, {num_labels}] for {num_labels} "
                        f"labels, got {getattr(expected, 'shape', type(expected))}"
                    )
                if actual.shape != expected.shape or not torch.allclose(
                    actual, expected, rtol=_TRACE_RTOL, atol=_TRACE_ATOL
                ):
                    raise ExportError(
                        f"the traced model disagrees with the model on a batch of "
                        f"{inputs[0].shape[0]}; it likely has shape- or data-dependent Python "
                        "control flow"
                    )
    finally:
        model.train(was_training)
    return traced


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    tmp.replace(path)


def _entry(path: Path) -> FileEntry:
    return FileEntry(bytes=path.stat().st_size, sha256=_sha256(path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
