"""The adaptive keep-alive: the prior without history, the empirical ski-rental minimiser on
known gap lists, the scaler's lag and the cold-start penalty, ties, bounds and bad input, the
bounded history, and properties over random gaps (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sparsam.decisions.keepalive import (
    DEFAULT_MIN_GAPS,
    KeepAliveHistory,
    choose_keep_alive,
    empirical_cost,
)

C = 20.0


@pytest.mark.parametrize(
    ("gaps", "kwargs", "expected"),
    [
        pytest.param([], {}, C, id="no-history-prior-is-cold-start"),
        pytest.param([1000.0] * (DEFAULT_MIN_GAPS - 1), {}, C, id="too-few-gaps-prior"),
        pytest.param([], {"ceiling_s": 5.0}, 5.0, id="prior-clamped-to-ceiling"),
        pytest.param([1000.0] * 10, {}, 0.0, id="long-gaps-release-at-once"),
        pytest.param([5.0] * 10, {}, 5.0, id="short-gaps-bridged"),
        pytest.param([5.0] * 10 + [1000.0], {}, 5.0, id="mostly-short-keep-through-them"),
        # 4 gaps of 30 s, 6 long ones: keeping 30 s costs 4*30 + 6*50 = 420, releasing at once
        # 10*20 = 200: release.
        pytest.param([30.0] * 4 + [1000.0] * 6, {}, 0.0, id="medium-gaps-not-worth-it"),
        # 9 gaps of 30 s, 1 long one: keeping 30 s costs 270 + 50 = 320, releasing 10*20 = 200.
        pytest.param([30.0] * 9 + [1000.0], {}, 0.0, id="gap-above-cold-start-released"),
        # gaps of 70 s behind a lag of 60 s: keeping total 70 (T = 10) costs 70 per gap,
        # releasing after the lag 60 + 20 = 80.
        pytest.param([70.0] * 10, {"lag_s": 60.0}, 10.0, id="lag-shifts-keep-alive"),
        pytest.param([1000.0] * 10, {"lag_s": 60.0}, 0.0, id="lag-long-gaps-zero"),
        # gaps of 30 s: release costs 20 each, keeping 30; with a penalty of 20 release is 40.
        pytest.param([30.0] * 10, {"cold_start_penalty_s": 20.0}, 30.0, id="penalty-keeps"),
        pytest.param([30.0] * 10, {}, 0.0, id="no-penalty-releases"),
        # equal cost (a gap of exactly C + 0: keeping 20 costs 20, releasing 0 + 20): longest.
        pytest.param([20.0] * 10, {}, 20.0, id="tie-goes-to-longer"),
        pytest.param([1000.0] * 10, {"floor_s": 15.0}, 15.0, id="floor"),
        # the 5 s gaps are beyond a 3 s ceiling: within it, releasing at once is cheapest.
        pytest.param([5.0] * 10, {"ceiling_s": 3.0}, 0.0, id="ceiling-bounds-the-search"),
        pytest.param([-1.0, math.nan, math.inf] * 5, {}, C, id="invalid-gaps-ignored"),
    ],
)
def test_choose_keep_alive(gaps: list[float], kwargs: dict[str, float], expected: float) -> None:
    assert choose_keep_alive(gaps, C, **kwargs) == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"lag_s": -1.0}, id="negative-lag"),
        pytest.param({"floor_s": 10.0, "ceiling_s": 5.0}, id="floor-above-ceiling"),
        pytest.param({"cold_start_penalty_s": -1.0}, id="negative-penalty"),
    ],
)
def test_bad_bounds_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="keep-alive bounds"):
        choose_keep_alive([1.0] * 10, C, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("gaps", "keep", "penalty", "expected"),
    [
        pytest.param([5.0, 30.0], 10.0, 0.0, 5.0 + 10.0 + C, id="one-kept-one-missed"),
        pytest.param([5.0, 30.0], 30.0, 0.0, 35.0, id="gap-equal-keep-is-kept"),
        pytest.param([30.0], 0.0, 7.0, C + 7.0, id="penalty-added-per-miss"),
        pytest.param([], 10.0, 0.0, 0.0, id="empty"),
    ],
)
def test_empirical_cost(gaps: list[float], keep: float, penalty: float, expected: float) -> None:
    assert empirical_cost(gaps, keep, C, penalty) == pytest.approx(expected)


def test_history_is_bounded_and_ignores_bad_gaps() -> None:
    history = KeepAliveHistory(limit=3)
    for gap in (1.0, -5.0, 2.0, math.nan, 3.0, 4.0):
        history = history.observe(gap)
    assert history.gaps == (2.0, 3.0, 4.0)
    assert history.limit == 3


gap_lists = st.lists(
    st.floats(min_value=0, max_value=5000, allow_nan=False), min_size=DEFAULT_MIN_GAPS
)


@settings(max_examples=150, deadline=None)
@given(
    gaps=gap_lists,
    cold=st.floats(min_value=0, max_value=300),
    lag=st.floats(min_value=0, max_value=120),
    probe=st.floats(min_value=0, max_value=6000),
)
# Found by hypothesis: lag + (gap - lag) fell an ulp short of the gap chosen as keep-alive.
@example(gaps=[0.0] * 7 + [0.99999], cold=1.0, lag=0.297664350221476, probe=0.0)
def test_minimises_the_empirical_cost(
    gaps: list[float], cold: float, lag: float, probe: float
) -> None:
    """The chosen T is within bounds, no T costs less (probe and every gap), and its in-sample
    cost is at most twice the offline optimum sum(min(g, C)) (it beats T = C, which is 2x)."""
    keep = choose_keep_alive(gaps, cold, lag_s=lag, ceiling_s=6000.0)
    assert 0.0 <= keep <= 6000.0
    best = empirical_cost(gaps, lag + keep, cold)
    tolerance = 1e-6 * (1 + best)
    for other in [probe, *gaps]:
        assert best <= empirical_cost(gaps, lag + other, cold) + tolerance
    if lag == 0:
        assert best <= 2 * sum(min(g, cold) for g in gaps) + tolerance


@settings(max_examples=100, deadline=None)
@given(gaps=gap_lists, penalty=st.floats(min_value=0, max_value=300))
def test_penalty_never_shortens_the_keep_alive(gaps: list[float], penalty: float) -> None:
    """Pricing cold starts higher can only keep replicas longer."""
    assert choose_keep_alive(gaps, C, cold_start_penalty_s=penalty) >= choose_keep_alive(gaps, C)
