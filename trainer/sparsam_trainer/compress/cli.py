"""`python -m sparsam_trainer compress`: compress a trained model, judge it, export it.

    python -m sparsam_trainer compress --model OUT/model.pt --spec compression.yaml \\
        --output-dir COMPRESSED [--threads 2] [--max-eval-samples N]

`--spec` is the TrainingJob's `spec.compression` object as JSON or YAML (a whole TrainingJob
manifest works too), so the operator passes it through unchanged. The command always writes
`report.json`; when the accuracy drop is within `maxAccuracyDrop` it exports the compressed model
into `OUTPUT_DIR/model/` and exits 0, otherwise it exits 76 (exitcodes.BUDGET_EXCEEDED) and the
report's `decision.reason` says which metric moved by how much against which budget. Bad input
(a missing file, a spec that does not fit the CRD, an unknown task) exits 2 with a one-line
error, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from sparsam_trainer import exitcodes
from sparsam_trainer.arguments import NON_NEGATIVE, POSITIVE
from sparsam_trainer.compress.distill import StudentError
from sparsam_trainer.compress.evaluate import MeasureSettings
from sparsam_trainer.compress.finetune import TrainSettings
from sparsam_trainer.compress.pipeline import Settings, compress, tokenizer_file
from sparsam_trainer.compress.prune import PruningError
from sparsam_trainer.compress.report import write_report
from sparsam_trainer.compress.spec import CompressionSpec, SpecError, load_spec, spec_from_text

MODEL_DIR = "model"


class InputError(ValueError):
    """Input the user can fix: the message names the file or field."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sparsam_trainer compress",
        description="Compress a trained model (distill, prune, quantize) and gate it on accuracy.",
    )
    parser.add_argument("--model", type=Path, required=True, help="model.pt written by `train`")
    parser.add_argument(
        "--spec",
        type=Path,
        default=None,
        help="spec.compression as a JSON or YAML file; default $SPARSAM_COMPRESSION, the same "
        "as text (how the operator's compress pod gets it)",
    )
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument(
        "--threads", type=POSITIVE, default=2, help="torch threads for latency (default 2)"
    )
    parser.add_argument(
        "--max-eval-samples", type=POSITIVE, default=None, help="test examples (default all)"
    )
    parser.add_argument(
        "--max-train-samples",
        type=POSITIVE,
        default=None,
        help="training examples for fine-tunes, distillation and calibration (default all)",
    )
    parser.add_argument(
        "--fine-tune-steps", type=NON_NEGATIVE, default=200, help="after each pruning step"
    )
    parser.add_argument("--batch-size", type=POSITIVE, default=32)
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="default 1e-3 (CNN) or 5e-5 (encoder)"
    )
    parser.add_argument(
        "--max-distill-steps", type=NON_NEGATIVE, default=None, help="cap on distillation steps"
    )
    parser.add_argument("--latency-runs", type=POSITIVE, default=30, help="per batch size")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _load_model(path: Path) -> tuple[Any, torch.nn.Module]:
    """The task and the trained model from a `train` model.pt."""
    from sparsam_trainer.tasks import get_task

    if not path.is_file():
        raise InputError(f"--model {path}: no such file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a file that is not its own
        raise InputError(f"--model {path}: not a model.pt written by train ({error})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("task"), str):
        raise InputError(f"--model {path}: expected a dict with 'task' and 'model'")
    task = get_task(saved["task"])
    model = task.build_model()
    try:
        model.load_state_dict(saved["model"])
    except (KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(f"--model {path}: weights do not fit task {task.name}: {first}") from None
    return task, model.eval()


def _spec(path: Path | None) -> CompressionSpec:
    if path is not None:
        return load_spec(path)
    text = os.environ.get("SPARSAM_COMPRESSION")
    if not text:
        raise SpecError("--spec is required (or set SPARSAM_COMPRESSION)")
    return spec_from_text(text, "$SPARSAM_COMPRESSION")


def main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return exitcodes.USAGE if exit_.code else exitcodes.OK
    try:
        spec = _spec(args.spec)
        task, model = _load_model(args.model)
    except (SpecError, InputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return exitcodes.USAGE
    settings = Settings(
        measure=MeasureSettings(threads=args.threads, latency_runs=args.latency_runs),
        fine_tune=TrainSettings(
            steps=args.fine_tune_steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
        ),
        max_distill_steps=args.max_distill_steps,
        max_eval_samples=args.max_eval_samples,
        max_train_samples=args.max_train_samples,
        seed=args.seed,
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    torch.manual_seed(args.seed)
    try:
        outcome = compress(task, model, spec, settings, task.splits(args.seed))
    except (StudentError, PruningError) as error:
        # The spec fits the CRD but not this model (e.g. "layers:9" for a 6-layer encoder).
        print(f"error: {task.name}: {error}", file=sys.stderr)
        return exitcodes.USAGE
    report = outcome.report
    report["model"] = str(args.model)
    for stage in report["stages"]:
        print(f"{stage['name']}: {stage['summary']}")
    print(("accepted: " if outcome.decision.accepted else "rejected: ") + outcome.decision.reason)
    if not outcome.decision.accepted:
        report["exported"] = None
        write_report(report, args.output_dir)
        return exitcodes.BUDGET_EXCEEDED

    from sparsam_trainer.export import ExportError, export_model

    input_spec = task.input_spec()
    if input_spec.get("kind") == "text":
        input_spec = {**input_spec, "tokenizer": str(tokenizer_file(task))}
    test = task.splits(args.seed).test
    examples = tuple(tensor[:2] for tensor in test.tensors[:-1])
    final = report["final"]
    metrics = {
        "accuracy": final["accuracy"],
        "macro_f1": final["macro_f1"],
        "size_bytes": final["size_bytes"],
        "latency_ms_batch1_p50": final["latency"]["batch1_p50_ms"],
        "accuracy_uncompressed": report["original"]["accuracy"],
    }
    out = args.output_dir / MODEL_DIR
    try:
        export_model(outcome.model, task.name, task.labels, input_spec, examples, metrics, out)
    except ExportError as error:
        report["exported"] = {"error": str(error)}
        write_report(report, args.output_dir)
        print(f"error: the compressed model could not be exported: {error}", file=sys.stderr)
        return exitcodes.FAILED
    report["exported"] = {
        "dir": MODEL_DIR,
        "torchscript_bytes": (out / "model.ts").stat().st_size,
    }
    write_report(report, args.output_dir)
    return exitcodes.OK
