"""Checkpoint cadence (decisions/checkpointing): Young/Daly, the lost-work bound, clamps, priors."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsam.api.trainingjob import CheckpointIntervalStatus
from sparsam.decisions.checkpointing import (
    MAX_INTERVAL_SECONDS,
    MIN_INTERVAL_SECONDS,
    CheckpointSettings,
    Hazard,
    Observed,
    checkpoint_interval,
    estimate_hazard,
    preemption_rate,
)


def observed(rate: float | None) -> Hazard:
    return Hazard(rate, "observed")


@pytest.mark.parametrize(
    ("write", "rate", "workers", "fraction", "seconds", "limit"),
    [
        # MTBF = 3600 / (1/30) = 108,000 s; sqrt(2 * 60 * 108000) = 3600 (just the maximum).
        pytest.param(60.0, 1 / 30, 1, None, 3600.0, "young-daly", id="young-daly-1h"),
        # MTBF = 3600 / (0.1 * 2) = 18,000 s; sqrt(2 * 30 * 18000) = sqrt(1,080,000).
        pytest.param(30.0, 0.1, 2, None, math.sqrt(1_080_000), "young-daly", id="two-workers"),
        # Bound 2 * (0.05 * 18000 - 30) = 1740 > 1039.2: not binding.
        pytest.param(30.0, 0.1, 2, 0.05, math.sqrt(1_080_000), "young-daly", id="bound-loose"),
        # Bound 2 * (0.03 * 18000 - 30) = 1020 < 1039.2: binding.
        pytest.param(30.0, 0.1, 2, 0.03, 1020.0, "lost-work", id="bound-binding"),
        # MTBF 900 s, sqrt(2 * 1 * 900) = 42.4 -> the minimum.
        pytest.param(1.0, 1.0, 4, None, MIN_INTERVAL_SECONDS, "min", id="clamp-min"),
        # Bound 2 * (0.05 * 900 - 60) = -30: cannot be met, the minimum wins.
        pytest.param(60.0, 1.0, 4, 0.05, MIN_INTERVAL_SECONDS, "min", id="bound-unattainable"),
        # MTBF 3.6e6 s, sqrt(2 * 60 * 3.6e6) = 20,785 -> the maximum.
        pytest.param(60.0, 0.001, 1, None, MAX_INTERVAL_SECONDS, "max", id="clamp-max"),
        pytest.param(60.0, None, 8, 0.01, MAX_INTERVAL_SECONDS, "max", id="no-hazard"),
        pytest.param(60.0, 0.0, 8, None, MAX_INTERVAL_SECONDS, "max", id="zero-rate"),
        # Free checkpoints: tau 0 -> the minimum.
        pytest.param(0.0, 0.1, 1, None, MIN_INTERVAL_SECONDS, "min", id="free-write"),
    ],
)
def test_auto_interval(
    write: float,
    rate: float | None,
    workers: int,
    fraction: float | None,
    seconds: float,
    limit: str,
) -> None:
    result = checkpoint_interval(
        workers=workers,
        hazard=observed(rate),
        write_seconds=write,
        max_lost_work_fraction=fraction,
    )
    assert result.mode == "Auto"
    assert result.seconds == pytest.approx(seconds)
    assert result.limit == limit
    assert result.write_seconds == write
    assert result.write_measured
    if rate:
        assert result.mtbf_seconds == pytest.approx(3600.0 / (rate * workers))
    else:
        assert result.mtbf_seconds is None


def test_unattainable_bound_is_said() -> None:
    result = checkpoint_interval(
        workers=4, hazard=observed(1.0), write_seconds=60.0, max_lost_work_fraction=0.05
    )
    assert "cannot be met" in result.message
    assert "maxLostWorkFraction 0.05" in result.message


def test_bound_keeps_lost_work_within_fraction() -> None:
    result = checkpoint_interval(
        workers=2, hazard=observed(0.1), write_seconds=30.0, max_lost_work_fraction=0.03
    )
    assert result.mtbf_seconds is not None
    lost = (result.seconds / 2 + result.write_seconds) / result.mtbf_seconds
    assert lost == pytest.approx(0.03)


def test_unmeasured_write_time_uses_default() -> None:
    result = checkpoint_interval(workers=1, hazard=observed(1 / 30))
    assert result.write_seconds == 60.0
    assert not result.write_measured
    assert result.seconds == pytest.approx(3600.0)
    assert "default, not yet measured" in result.message


@pytest.mark.parametrize(
    ("capacity", "seen", "rate", "source"),
    [
        pytest.param("spot", Observed(3, 100.0), 0.03, "observed", id="spot-observed"),
        pytest.param("spot", Observed(1, 2.0), 0.01, "prior", id="spot-too-little"),
        pytest.param("spot", None, 0.01, "prior", id="spot-nothing"),
        pytest.param("on-demand", None, None, "none", id="on-demand-nothing"),
        pytest.param("on-demand", Observed(0, 5.0), None, "none", id="on-demand-little"),
        pytest.param("on-demand", Observed(0, 500.0), 0.0, "observed", id="on-demand-quiet"),
        pytest.param("on-demand", Observed(1, 5.0), 0.2, "observed", id="no-prior-evidence"),
    ],
)
def test_estimate_hazard(
    capacity: str, seen: Observed | None, rate: float | None, source: str
) -> None:
    hazard = estimate_hazard(capacity, seen, CheckpointSettings())
    assert hazard.source == source
    assert hazard.per_node_hour == (None if rate is None else pytest.approx(rate))


def test_prior_is_said_in_message() -> None:
    hazard = estimate_hazard("spot", Observed(0, 1.0), CheckpointSettings())
    # Prior 0.01 per node-hour x 8 workers: MTBF 45,000 s; sqrt(2 * 60 * 45000) = 2323.8.
    result = checkpoint_interval(workers=8, hazard=hazard, write_seconds=60.0)
    assert result.seconds == pytest.approx(math.sqrt(2 * 60 * 45_000))
    assert "prior: too little observation" in result.message


def test_on_demand_without_prior_gets_maximum() -> None:
    hazard = estimate_hazard("on-demand", None, CheckpointSettings())
    result = checkpoint_interval(workers=4, hazard=hazard, write_seconds=20.0)
    assert result.seconds == MAX_INTERVAL_SECONDS
    assert "no preemptions expected" in result.message


def test_settings_are_inputs() -> None:
    settings = CheckpointSettings(
        min_seconds=10.0, max_seconds=600.0, prior_hazard_per_node_hour={"spot": 1.0}
    )
    hazard = estimate_hazard("spot", None, settings)
    result = checkpoint_interval(workers=1, hazard=hazard, write_seconds=60.0, settings=settings)
    # sqrt(2 * 60 * 3600) = 657 -> this configuration's maximum.
    assert result.seconds == 600.0


@pytest.mark.parametrize(
    ("fixed", "seconds"),
    [
        pytest.param(timedelta(minutes=10), 600.0, id="10m"),
        # Fixed is what the user asked for: not clamped.
        pytest.param(timedelta(seconds=30), 30.0, id="below-min"),
        pytest.param(timedelta(hours=2), 7200.0, id="above-max"),
    ],
)
def test_fixed_interval_reports_inputs(fixed: timedelta, seconds: float) -> None:
    result = checkpoint_interval(
        workers=2,
        hazard=observed(0.1),
        write_seconds=30.0,
        fixed=fixed,
        max_lost_work_fraction=0.01,
    )
    assert result.mode == "Fixed"
    assert result.limit == "fixed"
    assert result.seconds == seconds
    assert result.write_seconds == 30.0
    assert result.mtbf_seconds == pytest.approx(18_000.0)
    assert result.message.startswith("fixed by spec")


def test_to_status() -> None:
    result = checkpoint_interval(workers=2, hazard=observed(0.1), write_seconds=30.0)
    assert result.to_status() == CheckpointIntervalStatus(
        seconds=1039,
        mode="Auto",
        write_seconds=30.0,
        mean_time_between_preemptions_seconds=result.mtbf_seconds,
        message=result.message,
    )
    assert result.mtbf_seconds == pytest.approx(18_000.0)


@pytest.mark.parametrize(
    ("preemptions", "hours", "rate"),
    [
        pytest.param(3, 100.0, 0.03, id="some"),
        pytest.param(0, 50.0, 0.0, id="none-seen"),
        pytest.param(0, 0.0, None, id="no-observation"),
    ],
)
def test_preemption_rate(preemptions: int, hours: float, rate: float | None) -> None:
    assert preemption_rate(preemptions, hours) == rate


def test_preemption_rate_rejects_negatives() -> None:
    with pytest.raises(ValueError, match="negative"):
        preemption_rate(-1, 10.0)


@given(
    write=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e5)),
    rate=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e3)),
    workers=st.integers(min_value=0, max_value=10_000),
    fraction=st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1.0)),
)
def test_auto_interval_always_within_clamps(
    write: float | None, rate: float | None, workers: int, fraction: float | None
) -> None:
    result = checkpoint_interval(
        workers=workers,
        hazard=observed(rate),
        write_seconds=write,
        max_lost_work_fraction=fraction,
    )
    assert MIN_INTERVAL_SECONDS <= result.seconds <= MAX_INTERVAL_SECONDS
    assert result.mode == "Auto"
