"""Training progress as JSON lines, for the operator to read.

Rank 0 appends one JSON object per line to ``--progress-file`` (opened, appended and closed each
time, so a reader tailing the file, a restarted run and a re-rendezvoused world all append to one
history). Every record has ``event``, ``step``, ``epoch``, ``total_steps``, ``percent``,
``world_size`` and ``timestamp`` (RFC 3339, UTC); ``loss`` is the mean training loss of the last
global batch, ``accuracy`` the latest validation accuracy (null before the first evaluation).

Events: ``start`` (also after every restart, with ``resumed_from``), ``step`` (every
``--progress-every`` steps), ``eval`` (end of an epoch), ``checkpoint``, ``preempted``,
``done`` (with ``test_accuracy`` and ``test_macro_f1``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class ProgressWriter:
    """Appends progress records; does nothing without a path (other ranks, or no file asked)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        if self._path is None:
            return
        record = {"event": event, **fields, "timestamp": _now()}
        with self._path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record, sort_keys=True) + "\n")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_progress(path: Path) -> list[dict[str, Any]]:
    """All complete records of a progress file (a torn last line is ignored)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
