"""The compress step's termination message: what the operator reads from the finished pod."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparsam_trainer.compress.report import termination_message, write_report

REPORT = {
    "decision": {"accepted": False, "reason": "accuracy fell 0.05 > maxAccuracyDrop 0.01"},
    "trainingJobStatus": {
        "sizeBytes": {"before": 100, "after": 25},
        "accuracy": {"before": 0.9, "after": 0.85},
        "latencyMs": {"before": 4.0, "after": 2.0},
        "accepted": False,
    },
}


def test_the_message_is_the_status_block_and_the_reason_in_one_line() -> None:
    line = termination_message(REPORT)
    assert "\n" not in line and len(line.encode()) < 4096
    assert json.loads(line) == {
        "compression": REPORT["trainingJobStatus"],
        "reason": "accuracy fell 0.05 > maxAccuracyDrop 0.01",
    }


def test_write_report_also_writes_the_termination_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv("SPARSAM_TERMINATION_LOG", str(log))
    write_report(dict(REPORT), tmp_path / "out")
    assert json.loads(log.read_text())["compression"]["accepted"] is False
    assert (tmp_path / "out" / "report.json").is_file()
