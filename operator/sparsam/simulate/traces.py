"""Loading the public traces the simulator replays (they live in a data folder beside the
checkout, never copied into it; `default_trace_dir` says where, and flags point elsewhere).

- Philly (Jeon et al., ATC'19): rigid multi-GPU training jobs, each `num_gpus`, `runtime` in
  minutes and `submitted_time` ("YYYY-MM-DD HH:MM:SS", treated as UTC). The recorded attempts
  are ignored: the simulator decides when a job runs.
- AWS Spot Advisor: per region, OS and instance type, `s` (spot saving in percent against
  on-demand) and `r` (interruption-frequency band, 0..4).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PHILLY_FILE = "philly_multigpu_jobs_2017.json"
SPOT_ADVISOR_FILE = "aws_spot_advisor_2025-07.json"


#: The repository root of a source checkout (operator/sparsam/simulate/traces.py -> 3 up).
REPO_ROOT = Path(__file__).resolve().parents[3]


def default_trace_dir(repo_root: Path = REPO_ROOT) -> Path:
    """Where the traces sit by default: `shared/data/traces` in the folder that holds the
    checkout (`repo_root`'s parent)."""
    return repo_root.parent / "shared" / "data" / "traces"


class SimulationError(ValueError):
    """Something the user can fix: a flag out of range, a trace that cannot be read."""


class TraceError(SimulationError):
    """A trace file is missing or does not have the shape we read."""


@dataclass(frozen=True, slots=True)
class Job:
    """One rigid training job: `gpus` GPUs for `runtime_s` seconds, submitted at `submit_s`
    (seconds since the trace's first submission)."""

    id: str
    gpus: int
    runtime_s: float
    submit_s: float

    @property
    def gpu_seconds(self) -> float:
        return self.gpus * self.runtime_s


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def parse_philly(records: Iterable[Mapping[str, Any]], max_jobs: int | None = None) -> list[Job]:
    """Jobs from Philly records, sorted by submission (ties by id), times relative to the first
    submission. With `max_jobs`, the first N jobs by submission time. Records without GPUs or
    with no positive runtime are skipped."""
    rows: list[tuple[datetime, str, int, float]] = []
    for record in records:
        try:
            gpus = int(record["num_gpus"])
            runtime = float(record["runtime"])
            submitted = _parse_time(str(record["submitted_time"]))
            ident = str(record["id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceError(f"a Philly job record lacks {exc}: {dict(record)!r:.200}") from exc
        if gpus <= 0 or runtime <= 0:
            continue
        rows.append((submitted, ident, gpus, runtime * 60.0))
    rows.sort()
    if max_jobs is not None:
        rows = rows[:max_jobs]
    if not rows:
        return []
    start = rows[0][0]
    return [
        Job(ident, gpus, runtime_s, (submitted - start).total_seconds())
        for submitted, ident, gpus, runtime_s in rows
    ]


def load_philly(path: Path, max_jobs: int | None = None) -> list[Job]:
    records = _read_json(path, "no Philly trace", "--trace")
    if not isinstance(records, list):
        raise TraceError(f"{path}: expected a JSON list of jobs")
    return parse_philly(records, max_jobs)


@dataclass(frozen=True, slots=True)
class SpotOffer:
    """The Spot Advisor's entry for one instance type: `saving_pct` (s) and `band` (r)."""

    region: str
    instance_type: str
    saving_pct: int
    band: int
    band_label: str
    #: The band's upper bound in percent as the file gives it ("max"), or None.
    band_max_pct: float | None


def parse_spot_advisor(
    data: Mapping[str, Any], region: str, instance_type: str, os_name: str = "Linux"
) -> SpotOffer:
    try:
        entry = data["spot_advisor"][region][os_name][instance_type]
    except KeyError as exc:
        raise TraceError(
            f"the Spot Advisor has no {os_name} {instance_type} in {region} (missing {exc})"
        ) from exc
    band = int(entry["r"])
    ranges = {int(r["index"]): r for r in data.get("ranges", [])}
    info = ranges.get(band, {})
    maximum = info.get("max")
    return SpotOffer(
        region,
        instance_type,
        int(entry["s"]),
        band,
        str(info.get("label", f"band {band}")),
        None if maximum is None else float(maximum),
    )


def load_spot_advisor(path: Path, region: str, instance_type: str) -> SpotOffer:
    return parse_spot_advisor(
        _read_json(path, "no Spot Advisor data", "--spot-advisor"), region, instance_type
    )


def _read_json(path: Path, missing: str, flag: str) -> Any:
    """The file's JSON; a missing or broken file is a TraceError that names the flag to pass."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TraceError(f"{missing} at {path} (pass {flag})") from exc
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path} is not JSON: {exc}") from exc
