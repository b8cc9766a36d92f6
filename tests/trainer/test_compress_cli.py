"""`python -m sparsam_trainer compress` end to end on both built-in tasks, on small subsets.

The command runs in-process (`cli.main`) to spare a torch import per case; the mnist model is
trained here for a few hundred steps, the bbc model is the task's encoder with an untrained head
(compression does not care whether the head is good, only how much it changes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from sparsam_trainer import exitcodes
from sparsam_trainer.compress import cli
from sparsam_trainer.compress.finetune import TrainSettings, train_steps
from sparsam_trainer.export import load_exported
from sparsam_trainer.tasks import get_task

# Small enough for a 2-core machine: a handful of steps, a few dozen examples.
FAST = ["--threads", "1", "--latency-runs", "3", "--batch-size", "16"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    task = get_task("mnist-cnn")
    model = task.build_model()
    train_steps(model, task.splits(0).train, TrainSettings(steps=150, batch_size=64))
    path = tmp_path_factory.mktemp("mnist") / "model.pt"
    torch.save({"task": task.name, "model": model.state_dict(), "metrics": {}}, path)
    return path


@pytest.fixture(scope="module")
def bbc_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    task = get_task("bbc-minilm")
    path = tmp_path_factory.mktemp("bbc") / "model.pt"
    torch.save({"task": task.name, "model": task.build_model().state_dict(), "metrics": {}}, path)
    return path


def run(tmp_path: Path, model: Path, spec: dict[str, Any], *options: str) -> tuple[int, Any]:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    out = tmp_path / "out"
    argv = ["--model", str(model), "--spec", str(spec_file), "--output-dir", str(out)]
    code = cli.main([*argv, *FAST, *options])
    report_file = out / "report.json"
    return code, json.loads(report_file.read_text()) if report_file.exists() else None


MNIST_CASES = [
    (
        "structured-static-distilled",
        {
            "distillation": {"student": "auto"},
            "pruning": {"sparsity": 0.5, "structured": True},
            "quantization": {"mode": "static"},
            "maxAccuracyDrop": 0.2,
        },
        ["distillation", "prune-channels", "quantize-static"],
    ),
    (
        "unstructured-dynamic",
        {"pruning": {"sparsity": 0.5}, "quantization": {"mode": "dynamic"}, "maxAccuracyDrop": 0.2},
        ["prune-unstructured", "quantize-dynamic"],
    ),
]


@pytest.mark.parametrize(
    ("spec", "stages"), [c[1:] for c in MNIST_CASES], ids=[c[0] for c in MNIST_CASES]
)
def test_mnist_is_compressed_and_exported(
    tmp_path: Path, mnist_model: Path, spec: dict[str, Any], stages: list[str]
) -> None:
    code, report = run(
        tmp_path,
        mnist_model,
        spec,
        "--max-eval-samples",
        "200",
        "--fine-tune-steps",
        "20",
        "--max-distill-steps",
        "40",
    )
    assert code == exitcodes.OK, report["decision"]
    assert [s["name"] for s in report["stages"]] == stages
    assert all(s["status"] == "applied" and "metrics" in s for s in report["stages"])
    assert report["original"]["accuracy"] > 0.5
    assert report["decision"]["accepted"] is True
    assert report["final"] == report["stages"][-1]["metrics"]
    assert report["trainingJobStatus"]["sizeBytes"]["after"] < report["original"]["size_bytes"]
    exported = load_exported(tmp_path / "out" / "model")
    predictions = exported.predict([[0] * 784, [255] * 784])
    assert len(predictions) == 2
    manifest = json.loads((tmp_path / "out" / "model" / "manifest.json").read_text())
    assert manifest["task"] == "mnist-cnn"
    assert manifest["metrics"]["accuracy"] == report["final"]["accuracy"]


def test_an_impossible_budget_is_rejected(tmp_path: Path, mnist_model: Path) -> None:
    spec = {"pruning": {"sparsity": 0.9}, "maxAccuracyDrop": 0}
    code, report = run(
        tmp_path, mnist_model, spec, "--max-eval-samples", "200", "--fine-tune-steps", "0"
    )
    assert code == exitcodes.BUDGET_EXCEEDED == 76
    decision = report["decision"]
    assert decision["accepted"] is False
    assert decision["metric"] == "accuracy"
    assert decision["after"] < decision["before"]
    assert "above maxAccuracyDrop 0" in decision["reason"]
    assert report["stages"][0]["metrics"]["sparsity"] > 0.85
    assert report["trainingJobStatus"]["accepted"] is False
    assert report["exported"] is None
    assert not (tmp_path / "out" / "model").exists()


def test_bbc_minilm_every_stage_shrinks_it(tmp_path: Path, bbc_model: Path) -> None:
    spec = {
        "distillation": {"student": "layers:2"},
        "pruning": {"sparsity": 0.5, "structured": True},
        "quantization": {"mode": "static"},
        "maxAccuracyDrop": 1,
    }
    code, report = run(
        tmp_path,
        bbc_model,
        spec,
        "--max-eval-samples",
        "16",
        "--max-train-samples",
        "32",
        "--fine-tune-steps",
        "1",
        "--batch-size",
        "4",
        "--max-distill-steps",
        "1",
    )
    assert code == exitcodes.OK
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == [
        "distillation",
        "prune-heads",
        "prune-ffn",
        "trim-vocabulary",
        "quantize-static",
        "quantize-dynamic",
        "quantize-embeddings",
    ]
    assert stages["quantize-static"]["status"] == "skipped"
    assert stages["quantize-static"]["summary"] == (
        "skipped: eager-mode static int8 has no kernels for Embedding, GELUActivation, LayerNorm"
    )
    assert "instead of static" in stages["quantize-dynamic"]["details"]["note"]
    sizes = [s["metrics"]["size_bytes"] for s in report["stages"] if "metrics" in s]
    assert sizes == sorted(sizes, reverse=True)
    assert report["delta"]["size_ratio"] > 10
    assert stages["distillation"]["details"]["architecture"].startswith("2 of 6 encoder layers")
    exported = load_exported(tmp_path / "out" / "model")
    predictions = exported.predict(["Shares rose on the stock market.", "A new film opened."])
    assert len(predictions) == 2


@pytest.mark.parametrize(
    ("spec", "model", "message"),
    [
        ({"pruning": {"sparsity": 2}}, "mnist", "spec.compression.pruning.sparsity must be in"),
        ({"pruning": {}}, "absent", "no such file"),
        ({"distillation": {"student": "layers:2"}}, "not-a-model", "not a model.pt"),
        ({"distillation": {"student": "layers:2"}}, "mnist", "not known for a CNN model"),
    ],
    ids=["bad-spec", "missing-model", "not-a-model", "student-does-not-fit"],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path,
    mnist_model: Path,
    capsys: pytest.CaptureFixture[str],
    spec: dict[str, Any],
    model: str,
    message: str,
) -> None:
    path = {"mnist": mnist_model, "absent": tmp_path / "absent.pt"}.get(model)
    if path is None:
        path = tmp_path / "junk.pt"
        path.write_text("not a torch file")
    code, report = run(tmp_path, path, spec)
    assert code == exitcodes.USAGE
    assert report is None
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_an_export_only_spec_exports_the_model_as_trained(
    tmp_path: Path, mnist_model: Path
) -> None:
    """What the operator asks for a job with spec.deploy and no spec.compression
    (`kube.trainingjob.EXPORT_ONLY`): no stage runs, nothing is lost, and the model as trained
    is exported in the format the model server loads."""
    spec = {"quantization": {"mode": "none"}, "maxAccuracyDrop": 0}
    code, report = run(tmp_path, mnist_model, spec, "--max-eval-samples", "200")
    assert code == exitcodes.OK, report["decision"]
    assert [(s["name"], s["status"]) for s in report["stages"]] == [("quantization", "skipped")]
    assert report["decision"]["accepted"] is True
    assert report["final"] == report["original"]
    exported = load_exported(tmp_path / "out" / "model")
    assert len(exported.predict([[0] * 784])) == 1
