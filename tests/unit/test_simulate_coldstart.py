"""Cold-start distributions for the serving replay: fixed, the bimodal default (its p50 and
p99), measured load times from a CSV, and the errors that name the bad row."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sparsam.simulate.coldstart import (
    ColdStartError,
    bimodal_default,
    fixed,
    load_cold_starts,
    parse_cold_starts,
)


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - seeded test draws


def test_fixed_always_draws_the_same() -> None:
    dist = fixed(20.0)
    rng = seeded(0)
    assert {dist.draw(rng) for _ in range(10)} == {20.0}
    assert (dist.median_s, dist.mean_s, dist.max_s) == (20.0, 20.0, 20.0)
    with pytest.raises(ColdStartError, match=">= 0"):
        fixed(-1.0)


def test_bimodal_default_matches_production_quantiles() -> None:
    dist = bimodal_default()
    assert 21.0 <= dist.quantile(0.5) <= 26.0
    assert 48.0 <= dist.quantile(0.99) <= 56.0
    a, b = seeded(7), seeded(7)
    assert [dist.draw(a) for _ in range(5)] == [dist.draw(b) for _ in range(5)]
    rng = seeded(1)
    sample = [dist.draw(rng) for _ in range(2000)]
    # Bimodal: few draws between the modes' shoulders, many on each side.
    assert sum(s < 25 for s in sample) > 800
    assert sum(s > 32 for s in sample) > 600


def test_csv_of_measured_load_times(tmp_path: Path) -> None:
    path = tmp_path / "loads.csv"
    path.write_text("seconds\n12.5\n40\n")
    dist = load_cold_starts(path)
    rng = seeded(0)
    assert {dist.draw(rng) for _ in range(50)} == {12.5, 40.0}
    assert dist.mean_s == pytest.approx(26.25)
    assert dist.max_s == 40.0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        pytest.param([], "has no load times", id="empty"),
        pytest.param([["seconds"]], "has no load times", id="header-only"),
        pytest.param([["10"], ["-3"]], r"row 2: -3 is not a duration", id="negative"),
        pytest.param([["10"], ["fast"]], r"row 2: 'fast' is not a number", id="not-a-number"),
        pytest.param([["10"], [""]], r"row 2: empty", id="empty-cell"),
        pytest.param([["10"], []], r"row 2: empty", id="empty-row"),
        pytest.param([["nan"]], r"row 1: nan is not a duration", id="nan"),
    ],
)
def test_bad_csv_names_the_row(rows: list[list[str]], message: str) -> None:
    with pytest.raises(ColdStartError, match=message):
        parse_cold_starts(rows)


def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(ColdStartError, match="no cold-start CSV"):
        load_cold_starts(tmp_path / "absent.csv")
