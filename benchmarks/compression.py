"""Original against compressed, side by side in one run, on both built-in tasks.

    nice -n 10 python benchmarks/compression.py [--tasks mnist-cnn,bbc-minilm]
        [--mnist-model PATH/model.pt] [--bbc-model PATH/model.pt] [--threads 2]

For each task it trains a model briefly (or takes a `train` model.pt), then runs what
`python -m sparsam_trainer compress` runs (sparsam_trainer.compress.pipeline.compress) with the
spec below, and measures the original and every stage on the same full test split with the same
thread count (2 by default, set with torch.set_num_threads). Prints one table per task (what each
stage contributes) and one JSON line last: each task's original and final figures, the ratios,
and the targets for bbc-minilm (serialized model >= 4x smaller, >= 2x faster at batch 1,
accuracy within 1 point) with whether each is met. Asserts nothing.

The stage table times each model after the previous one, so on a shared machine a burst of load
can land on one stage; the speedups in the JSON line come from the original and the compressed
model timed in turns (evaluate.compare_latency), which load hits alike. 10 to 25 minutes on a
2-core machine, depending on what else runs; most of it is bbc-minilm's training and
distillation.

Anchors: PyTorch's dynamic-quantization BERT tutorial (bert-base on MRPC): int8 Linear layers
give -59 % size (438 -> 181 MB), 1.78x faster at batch 1 on one thread, F1 0.902 unchanged.
DistilBERT (Sanh et al. 2019): half the layers of BERT-base initialised from the teacher and
distilled, -40 % size, 1.6x faster, 97 % of BERT's GLUE score. Here the three are combined, and
the token embedding (half of MiniLM's bytes, untouched by both anchors) is trimmed and int8.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsam_trainer.compress.evaluate import MeasureSettings, compare_latency
from sparsam_trainer.compress.finetune import TrainSettings, sample_batches
from sparsam_trainer.compress.pipeline import Settings, compress
from sparsam_trainer.compress.spec import parse_spec
from sparsam_trainer.tasks import get_task

ANCHORS = {
    "pytorch_dynamic_int8_bert_tutorial": "-59 % size, 1.78x faster at batch 1, F1 0.902 kept",
    "distilbert": "-40 % size, 1.6x faster, 97 % of the quality",
}
SPECS: dict[str, dict[str, Any]] = {
    "mnist-cnn": {
        "distillation": {"student": "auto", "epochs": 2},
        "pruning": {"sparsity": 0.25, "structured": True},
        "quantization": {"mode": "static"},
        "maxAccuracyDrop": 0.01,
    },
    "bbc-minilm": {
        "distillation": {"student": "layers:3", "epochs": 2, "temperature": 2.0, "alpha": 0.5},
        "pruning": {"sparsity": 0.1, "structured": True},
        "quantization": {"mode": "dynamic"},
        "maxAccuracyDrop": 0.01,
    },
}
#: Brief training of the original model: (steps, batch size, learning rate of the new layers,
#: learning rate of a pretrained encoder).
TRAINING = {"mnist-cnn": (400, 64, 1e-3, 0.0), "bbc-minilm": (150, 16, 2e-3, 5e-5)}
TARGETS = {"size_ratio_min": 4.0, "speedup_batch1_min": 2.0, "accuracy_drop_max": 0.01}


def train_briefly(task_name: str, seed: int) -> nn.Module:
    """The task's model trained for a few hundred steps (the encoder at BERT's usual rate)."""
    task = get_task(task_name)
    torch.manual_seed(seed)
    model = task.build_model()
    steps, batch_size, lr, encoder_lr = TRAINING[task_name]
    encoder = getattr(model, "encoder", None)
    groups: list[dict[str, Any]] = [
        {"params": [p for n, p in model.named_parameters() if not n.startswith("encoder.")]}
    ]
    if isinstance(encoder, nn.Module):
        groups.append({"params": list(encoder.parameters()), "lr": encoder_lr})
    optimizer = torch.optim.AdamW(groups, lr=lr)
    model.train()
    for batch in sample_batches(task.splits(seed).train, steps, batch_size, seed):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(*batch[:-1]), batch[-1])
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return model.eval()


def load_model(task_name: str, path: Path) -> nn.Module:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = get_task(task_name).build_model()
    model.load_state_dict(saved["model"])
    return model.eval()


def table(report: dict[str, Any]) -> str:
    rows = [
        "| stage | accuracy | macro-F1 | size MB | params | b1 p50 ms | b32 p50 ms | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    entries = [{"name": "original", "metrics": report["original"], "summary": ""}]
    entries += report["stages"]
    for entry in entries:
        m = entry.get("metrics")
        if m is None:
            rows.append(f"| {entry['name']} | | | | | | | {entry['summary']} |")
            continue
        rows.append(
            f"| {entry['name']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} "
            f"| {m['size_bytes'] / 1e6:.2f} | {m['parameters']:,} "
            f"| {m['latency']['batch1_p50_ms']:.2f} | {m['latency']['batch32_p50_ms']:.1f} "
            f"| {entry['summary']} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="mnist-cnn,bbc-minilm")
    parser.add_argument("--mnist-model", type=Path, default=None)
    parser.add_argument("--bbc-model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--fine-tune-steps", type=int, default=200)
    parser.add_argument("--max-distill-steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    # Stage progress on stderr; the table and the JSON line on stdout.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    models = {"mnist-cnn": args.mnist_model, "bbc-minilm": args.bbc_model}
    started = time.perf_counter()
    results: dict[str, Any] = {}
    out = Path(tempfile.mkdtemp(prefix="sparsam-compression-"))
    for task_name in args.tasks.split(","):
        task = get_task(task_name)
        began = time.perf_counter()
        path = models.get(task_name)
        logging.info("%s: %s", task_name, "training briefly" if path is None else f"loading {path}")
        model = train_briefly(task_name, args.seed) if path is None else load_model(task_name, path)
        trained_s = time.perf_counter() - began
        spec = parse_spec(SPECS[task_name])
        settings = Settings(
            measure=MeasureSettings(threads=args.threads, latency_runs=args.latency_runs),
            fine_tune=TrainSettings(steps=args.fine_tune_steps, batch_size=32, seed=args.seed),
            max_distill_steps=args.max_distill_steps,
            seed=args.seed,
        )
        outcome = compress(task, model, spec, settings, task.splits(args.seed))
        report = outcome.report
        (out / f"{task_name}.json").write_text(json.dumps(report, indent=2))
        print(f"\n## {task_name} (trained {trained_s:.0f} s; spec {json.dumps(SPECS[task_name])})")
        print(table(report))
        print(report["decision"]["reason"])
        original, final, delta = report["original"], report["final"], report["delta"]
        # Stage figures are timed one model after another; on a shared machine the speedup is
        # stated from the two models timed in turns instead.
        paired = compare_latency(
            {"original": model, "compressed": outcome.model},
            task.splits(args.seed).test,
            settings.measure,
        )
        before, after = paired["original"], paired["compressed"]
        print(
            f"timed in turns: batch 1 {before.batch1_p50_ms:.2f} -> {after.batch1_p50_ms:.2f} ms,"
            f" batch 32 {before.batch32_p50_ms:.1f} -> {after.batch32_p50_ms:.1f} ms"
        )
        results[task_name] = {
            "original": original,
            "final": final,
            "size_ratio": delta["size_ratio"],
            "latency_in_turns": {"original": asdict(before), "compressed": asdict(after)},
            "speedup_batch1_p50": round(before.batch1_p50_ms / after.batch1_p50_ms, 3),
            "speedup_batch32_p50": round(before.batch32_p50_ms / after.batch32_p50_ms, 3),
            "speedup_batch1_p50_sequential": delta["speedup_batch1_p50"],
            "accuracy_drop": round(original["accuracy"] - final["accuracy"], 6),
            "accepted": report["decision"]["accepted"],
            "stages": {
                s["name"]: (
                    {
                        "size_ratio": s["delta_from_previous"]["size_ratio"],
                        "speedup_batch1_p50": s["delta_from_previous"]["speedup_batch1_p50"],
                        "accuracy": s["delta_from_previous"]["accuracy"],
                    }
                    if "metrics" in s
                    else s["summary"]
                )
                for s in report["stages"]
            },
            "wall_s": round(time.perf_counter() - began, 1),
        }
    targets: dict[str, Any] = {}
    bbc = results.get("bbc-minilm")
    if bbc is not None:
        targets = {
            "size_ratio": {
                "target": f">= {TARGETS['size_ratio_min']}",
                "value": bbc["size_ratio"],
                "met": (bbc["size_ratio"] or 0) >= TARGETS["size_ratio_min"],
            },
            "speedup_batch1": {
                "target": f">= {TARGETS['speedup_batch1_min']}",
                "value": bbc["speedup_batch1_p50"],
                "met": (bbc["speedup_batch1_p50"] or 0) >= TARGETS["speedup_batch1_min"],
            },
            "accuracy_drop": {
                "target": f"<= {TARGETS['accuracy_drop_max']}",
                "value": bbc["accuracy_drop"],
                "met": bbc["accuracy_drop"] <= TARGETS["accuracy_drop_max"],
            },
        }
    print(f"\nreports: {out}")
    line = {
        "benchmark": "compression",
        "threads": args.threads,
        "wall_s": round(time.perf_counter() - started, 1),
        "tasks": results,
        "targets_bbc_minilm": targets,
        "all_targets_met": bool(targets) and all(t["met"] for t in targets.values()),
        "anchors": ANCHORS,
        "torch": torch.__version__,
    }
    print(json.dumps(line, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
