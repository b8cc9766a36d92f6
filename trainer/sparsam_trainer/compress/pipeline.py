"""The compression pipeline: run the configured stages in order, measure after each one.

Stages follow the CRD's order, distillation -> pruning -> quantization, each on the previous
stage's output, because each makes the next cheaper and safer: pruning a distilled student
fine-tunes fewer weights, and quantizing last means no fine-tune ever runs on int8 weights.

- distillation: a smaller student cut from the teacher (see distill.py), trained against it;
- pruning, unstructured: global magnitude pruning + fine-tune with the masks held, then the
  zeros are made permanent (size and speed unchanged: the tensors stay dense);
- pruning, structured: conv channels (CNN) or attention heads, then FFN neurons (BERT), each
  followed by a fine-tune (smaller tensors: smaller and faster);
- pruning of a text model also trims the vocabulary to the tokens of the training data;
- quantization: dynamic int8 Linear layers (plus int8 embedding rows for text models), or
  static int8 with calibration where eager mode supports the model; where it does not, the
  static stage is reported as skipped with the reason and dynamic runs instead.

Every stage's model is measured on the same test examples (evaluate.py); the last one is judged
against the original by `report.decide`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from sparsam_trainer.compress import distill as distillation
from sparsam_trainer.compress import embedding, prune, quantize
from sparsam_trainer.compress.evaluate import MeasureSettings, Metrics, measure
from sparsam_trainer.compress.finetune import (
    TrainSettings,
    cross_entropy,
    sample_batches,
    train_steps,
)
from sparsam_trainer.compress.report import Decision, StageResult, build_report, decide
from sparsam_trainer.compress.spec import CompressionSpec
from sparsam_trainer.tasks.base import Splits, Task

log = logging.getLogger("sparsam_trainer.compress")

#: Special tokens of a BERT WordPiece vocabulary that trimming always keeps; [UNK] first, as
#: it is where every trimmed id goes.
SPECIAL_TOKENS = ("[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True, slots=True)
class Settings:
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    fine_tune: TrainSettings = field(default_factory=TrainSettings)
    #: Cap on distillation steps (epochs x batches per epoch otherwise); None: no cap.
    max_distill_steps: int | None = None
    #: Test examples to evaluate on (a fixed, seeded sample); None: the whole test split.
    max_eval_samples: int | None = None
    #: Training examples for fine-tunes, importance and calibration; None: the whole split.
    max_train_samples: int | None = None
    #: Batches used to rank heads and neurons, and to calibrate static quantization.
    importance_batches: int = 4
    calibration_batches: int = 8
    seed: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Outcome:
    report: dict[str, Any]
    decision: Decision
    model: nn.Module


def subset(data: TensorDataset, limit: int | None, seed: int) -> TensorDataset:
    """A fixed random sample of `limit` examples (all of them when limit is None or larger)."""
    if limit is None or limit >= len(data):
        return data
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit]
    return TensorDataset(*(tensor[index] for tensor in data.tensors))


def _token_ids(task: Task) -> dict[str, int] | None:
    """Ids of the special tokens in the task's tokenizer, or None for a non-text task."""
    spec = task.input_spec()
    if spec.get("kind") != "text":
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file(task)))
    ids: dict[str, int] = {}
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"the tokenizer of {task.name} has no {token} token")
        ids[token] = int(token_id)
    return ids


def tokenizer_file(task: Task) -> Path:
    """The tokenizer a text task's input spec names, as a file path for export_model."""
    name = Path(str(task.input_spec()["tokenizer"]))
    if name.is_file():
        return name
    # The built-in text task names the file inside its model package.
    from sparsam_trainer.tasks.bbc import model_path

    return model_path() / name


@dataclass(slots=True)
class Done:
    """What an applied stage hands back: its model and what it did."""

    model: nn.Module
    summary: str
    details: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


Step = Callable[[nn.Module], Done]


class _Runner:
    """Runs stages one after another, measuring each; holds the current model."""

    def __init__(self, task: Task, model: nn.Module, splits: Splits, settings: Settings) -> None:
        self.task = task
        self.settings = settings
        self.train = subset(splits.train, settings.max_train_samples, settings.seed)
        self.test = subset(splits.test, settings.max_eval_samples, settings.seed)
        self.model = model.eval()
        self.stages: list[StageResult] = []
        log.info("measuring the original model on %d test examples", len(self.test))
        self.original = self.measure(self.model)

    def measure(self, model: nn.Module) -> Metrics:
        return measure(model, self.test, len(self.task.labels), self.settings.measure)

    def fine_tune(self, model: nn.Module) -> float | None:
        with torch.enable_grad():
            return train_steps(model, self.train, self.settings.fine_tune)

    def run(self, name: str, step: Step) -> None:
        """Apply `step` to a copy of the current model, measure it, and make it current."""
        log.info("stage %s: running", name)
        started = time.perf_counter()
        with torch.enable_grad():
            done = step(copy.deepcopy(self.model))
        done.model.eval()
        metrics = self.measure(done.model)
        self.model = done.model
        seconds = time.perf_counter() - started
        log.info(
            "stage %s: %s; accuracy %.4f, %d bytes, %.2f ms at batch 1 (%.0f s)",
            name,
            done.summary,
            metrics.accuracy,
            metrics.size_bytes,
            metrics.latency.batch1_p50_ms,
            seconds,
        )
        self.stages.append(
            StageResult(
                name, "applied", done.summary, done.details, metrics, seconds, done.warnings
            )
        )

    def skip(self, name: str, why: str) -> None:
        log.info("stage %s: skipped: %s", name, why)
        self.stages.append(StageResult(name, "skipped", f"skipped: {why}"))

    def batches(self, count: int) -> list[tuple[torch.Tensor, ...]]:
        size = self.settings.fine_tune.batch_size
        return sample_batches(self.train, count, size, self.settings.seed + 1)


def _distill(runner: _Runner, spec: CompressionSpec) -> None:
    config = spec.distillation
    assert config is not None
    teacher = runner.model

    def step(model: nn.Module) -> Done:
        student = distillation.make_student(model, config.student)
        steps, loss = distillation.distill(
            teacher,
            student.model,
            runner.train,
            temperature=config.temperature,
            alpha=config.alpha,
            epochs=config.epochs,
            settings=runner.settings.fine_tune,
            max_steps=runner.settings.max_distill_steps,
        )
        details = {
            "student": config.student,
            "architecture": student.description,
            "temperature": config.temperature,
            "alpha": config.alpha,
            "epochs": config.epochs,
            "steps": steps,
            "final_loss": loss,
        }
        return Done(student.model, f"distilled into {student.description} ({steps} steps)", details)

    runner.run("distillation", step)


def _prune_unstructured(runner: _Runner, sparsity: float) -> None:
    def step(model: nn.Module) -> Done:
        params = prune.global_magnitude_prune(model, sparsity)
        loss = runner.fine_tune(model)
        prune.make_permanent(params)
        weights = [module.get_parameter(name) for module, name in params]
        zeros = sum(int((weight == 0).sum()) for weight in weights)
        total = sum(weight.numel() for weight in weights)
        details = {
            "target_sparsity": sparsity,
            "linear_conv_sparsity": round(zeros / total, 6),
            "fine_tune_steps": runner.settings.fine_tune.steps,
            "fine_tune_loss": loss,
            "note": "unstructured: zeros stay in dense tensors, so size and latency do not "
            "change until a sparse kernel or a compressor uses them",
        }
        return Done(
            model, f"zeroed {zeros} of {total} Linear/Conv weights (global magnitude)", details
        )

    runner.run("prune-unstructured", step)


def _prune_structured(runner: _Runner, sparsity: float) -> None:
    if prune.encoder_layers(runner.model) is None:

        def channels(model: nn.Module) -> Done:
            changed = prune.prune_conv_channels(model, sparsity)
            loss = runner.fine_tune(model)
            widths = ", ".join(f"{name} {b}->{a}" for name, (b, a) in changed.items())
            details = {"channels": changed, "fine_tune_loss": loss}
            return Done(model, f"conv channels {widths}", details)

        runner.run("prune-channels", channels)
        return

    def units(heads: float, neurons: float, key: str, what: str) -> Step:
        def step(model: nn.Module) -> Done:
            batches = runner.batches(runner.settings.importance_batches)
            scores = prune.taylor_scores(model, batches, cross_entropy)
            per_layer = prune.prune_heads_and_neurons(model, heads, neurons, scores)
            loss = runner.fine_tune(model)
            before = sum(layer[f"{key}_before"] for layer in per_layer)
            after = sum(layer[f"{key}_after"] for layer in per_layer)
            details = {"layers": per_layer, "importance": "taylor |w*grad|", "fine_tune_loss": loss}
            return Done(model, f"{what}: kept {after} of {before} (Taylor importance)", details)

        return step

    runner.run("prune-heads", units(sparsity, 0.0, "heads", "attention heads"))
    runner.run("prune-ffn", units(0.0, sparsity, "neurons", "FFN neurons"))


def _trim_vocabulary(runner: _Runner, special: dict[str, int]) -> None:
    def step(model: nn.Module) -> Done:
        before = embedding.vocabulary_size(model)
        seen = torch.unique(runner.train.tensors[0]).tolist()
        after = embedding.trim_vocabulary(model, seen, special.values())
        details = {
            "vocabulary_before": before,
            "vocabulary_after": after,
            "source": f"token ids of {len(runner.train)} training examples",
        }
        return Done(model, f"vocabulary {before} -> {after} tokens (unseen ids -> [UNK])", details)

    runner.run("trim-vocabulary", step)


def _quantize_dynamic(runner: _Runner, text: bool, note: str = "") -> None:
    def linear(model: nn.Module) -> Done:
        quantized, caught = quantize.dynamic_int8(model)
        details = {"engine": torch.backends.quantized.engine, "layers": "nn.Linear"}
        if note:
            details["note"] = note
        return Done(quantized, "int8 Linear weights (dynamic)", details, caught)

    runner.run("quantize-dynamic", linear)
    if text:

        def rows(model: nn.Module) -> Done:
            count = embedding.quantize_embeddings(model)
            details = {"embeddings": count, "scheme": "symmetric int8, one scale per row"}
            return Done(model, f"int8 rows in {count} embeddings", details)

        runner.run("quantize-embeddings", rows)


def _quantize_static(runner: _Runner, text: bool) -> None:
    try:
        quantize.check_static(runner.model, len(runner.task.input_names))
        calibration = runner.batches(runner.settings.calibration_batches)

        def step(model: nn.Module) -> Done:
            quantized, caught = quantize.static_int8(model, calibration)
            details = {
                "engine": torch.backends.quantized.engine,
                "calibration_batches": len(calibration),
            }
            return Done(quantized, "int8 weights and activations (static)", details, caught)

        runner.run("quantize-static", step)
    except quantize.StaticUnsupported as error:
        runner.skip("quantize-static", str(error))
        _quantize_dynamic(runner, text, note=f"instead of static: {error}")


def compress(
    task: Task, model: nn.Module, spec: CompressionSpec, settings: Settings, splits: Splits
) -> Outcome:
    """Run every stage `spec` asks for on `model` and judge the result."""
    runner = _Runner(task, model, splits, settings)
    special = _token_ids(task)
    if spec.distillation is not None:
        _distill(runner, spec)
    if spec.pruning is not None:
        if spec.pruning.structured:
            _prune_structured(runner, spec.pruning.sparsity)
        else:
            _prune_unstructured(runner, spec.pruning.sparsity)
        if special is not None:
            _trim_vocabulary(runner, special)
    if spec.quantization is not None:
        mode = spec.quantization.mode
        if mode == "dynamic":
            _quantize_dynamic(runner, special is not None)
        elif mode == "static":
            _quantize_static(runner, special is not None)
        else:
            runner.skip("quantization", "mode is none")
    final = next(
        (s.metrics for s in reversed(runner.stages) if s.metrics is not None), runner.original
    )
    decision = decide(runner.original, final, spec.max_accuracy_drop)
    report = build_report(
        task=task.name,
        spec=spec.to_raw(),
        settings=settings.as_json(),
        original=runner.original,
        stages=runner.stages,
        decision=decision,
    )
    return Outcome(report, decision, runner.model)
