"""The scale-to-zero simulator: reading the Azure LLM trace, the offline optimum on hand-made
gaps (and against brute force), the oracle's needed replicas, replays through decide_scaling
whose answer is known (one cold start, requests within the keep-alive, the rps window's lag),
the fleet split, and properties over random traces (hypothesis)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsam.api.inferenceservice import ScalingMetric
from sparsam.simulate.coldstart import ColdStarts, parse_cold_starts
from sparsam.simulate.serving import (
    AZURE_LLM_FILE,
    Adaptive,
    Horizon,
    Outcome,
    Policy,
    Request,
    ServiceModel,
    World,
    horizon_of,
    keep_or_release_cost,
    load_azure_llm,
    needed_replicas,
    optimum_cost,
    parse_azure_llm,
    replay,
    run_scenario,
    service_spec,
    split_fleet,
)
from sparsam.simulate.traces import TraceError, default_trace_dir

C = 10
#: 20 generated tokens at 10 tokens/s: every test request is served in 2 s.
MODEL = ServiceModel(prefill_tokens_per_s=1000.0, decode_tokens_per_s=10.0)
WORLD = World(cold_start_s=C, pass_interval_s=5, rate_window_s=60, service=MODEL)


def requests(*arrivals: float) -> list[Request]:
    return [Request(a, 0, 20) for a in arrivals]


def policy(
    metric: ScalingMetric = "concurrency", keep_s: float = 30.0, min_replicas: int = 0
) -> Policy:
    return Policy("p", service_spec(metric, 1.0, 1, keep_s, min_replicas=min_replicas))


# --- the trace -------------------------------------------------------------------------------


ROWS = [
    {"TIMESTAMP": "2023-11-16 18:15:46.6805900", "ContextTokens": "374", "GeneratedTokens": "4"},
    {"TIMESTAMP": "2023-11-16 18:15:50.9951690", "ContextTokens": "396", "GeneratedTokens": "9"},
]


def test_parse_azure_llm_starts_at_zero() -> None:
    parsed = parse_azure_llm(ROWS)
    assert [r.context_tokens for r in parsed] == [374, 396]
    assert parsed[0].arrival_s == 0.0
    assert parsed[1].arrival_s == pytest.approx(4.314579)


def test_parse_azure_llm_rejects_out_of_order_rows_naming_the_row() -> None:
    with pytest.raises(TraceError, match=r"row 2 .*18:15:46.6805900 is before the row above"):
        parse_azure_llm(list(reversed(ROWS)))


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({"TIMESTAMP": "2023-11-16 18:15:50.1", "ContextTokens": "1"}, id="no-column"),
        pytest.param(
            {"TIMESTAMP": "yesterday", "ContextTokens": "1", "GeneratedTokens": "1"}, id="bad-time"
        ),
    ],
)
def test_parse_azure_llm_rejects_bad_rows(row: dict[str, str]) -> None:
    with pytest.raises(TraceError, match="Azure LLM trace row"):
        parse_azure_llm([row])


def test_missing_trace_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="--traces"):
        load_azure_llm(tmp_path / "absent.csv")


def test_shared_trace_shape() -> None:
    path = default_trace_dir() / AZURE_LLM_FILE
    if not path.is_file():
        pytest.skip(f"no shared data at {path} (the shared data folder sits beside the repo)")
    trace = load_azure_llm(path)
    assert len(trace) == 19_366
    assert max(b.arrival_s - a.arrival_s for a, b in itertools.pairwise(trace)) < 5.0


def test_service_time_from_tokens() -> None:
    assert ServiceModel(5000.0, 50.0).service_s(Request(0.0, 1000, 100)) == pytest.approx(2.2)


# --- the offline optimum ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("busy", "expected"),
    [
        pytest.param([], 0.0, id="nothing-to-serve"),
        pytest.param([(0.0, 2.0)], C + 2.0, id="one-request-boot-plus-busy"),
        pytest.param([(0.0, 2.0), (5.0, 7.0)], C + 4.0 + 3.0, id="short-gap-kept"),
        pytest.param([(0.0, 2.0), (100.0, 102.0)], C + 4.0 + C, id="long-gap-released"),
        pytest.param([(0.0, 2.0), (12.0, 14.0)], C + 4.0 + C, id="gap-equal-cold-start"),
        pytest.param([(0.0, 5.0), (3.0, 8.0)], C + 8.0, id="overlap-merged"),
        pytest.param([(100.0, 102.0), (0.0, 2.0)], C + 4.0 + C, id="unsorted"),
    ],
)
def test_keep_or_release_cost(busy: list[tuple[float, float]], expected: float) -> None:
    assert keep_or_release_cost(busy, C) == pytest.approx(expected)


def test_keep_or_release_rejects_reversed_interval() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        keep_or_release_cost([(3.0, 1.0)], C)


@pytest.mark.parametrize(
    ("needed", "cold", "expected"),
    [
        pytest.param([0, 0, 0], 2, 0.0, id="idle"),
        pytest.param([0, 1, 1, 0, 0, 1], 2, 3 + 2 + 2, id="gap-of-cold-start-bridged"),
        pytest.param([1, 0, 0, 0, 0, 1], 2, 2 + 2 + 2, id="long-gap-released"),
        pytest.param([1, 2, 1], 3, (3 + 3) + (1 + 3), id="two-layers"),
        pytest.param([2, 0, 2], 5, 2 * (2 + 5 + 1), id="two-layers-same-gap"),
    ],
)
def test_optimum_cost_by_layers(needed: list[int], cold: int, expected: float) -> None:
    assert optimum_cost(needed, cold) == pytest.approx(expected)


def _brute_force(needed: list[int], cold: int) -> int:
    """Cheapest on/off schedule of one replica over [-cold, len) that is ready (on for the
    last `cold` steps before) at every needed step."""
    length = len(needed) + cold
    best = length
    for bits in itertools.product((0, 1), repeat=length):
        ok = True
        for t, need in enumerate(needed):
            if need:
                s = t + cold  # index of step t in bits
                if not all(bits[s - cold : s + 1]):
                    ok = False
                    break
        if ok:
            best = min(best, sum(bits))
    return best if any(needed) else 0


@settings(max_examples=40, deadline=None)
@given(
    needed=st.lists(st.integers(min_value=0, max_value=1), min_size=1, max_size=8),
    cold=st.integers(min_value=0, max_value=3),
)
def test_optimum_matches_brute_force(needed: list[int], cold: int) -> None:
    assert optimum_cost(needed, cold) == _brute_force(needed, cold)


def test_needed_concurrency_counts_overlaps() -> None:
    spec = service_spec("concurrency", 1.0, 2, 30.0)
    span = Horizon(0, 6)
    # two requests of 2 s at 0.0 and 1.0: steps 0, 1, 2 in service; step 1 has both.
    assert needed_replicas(requests(0.0, 1.0), spec, WORLD, span) == [1, 2, 1, 0, 0, 0]


def test_needed_rps_is_busy_below_two_replicas_and_rate_above() -> None:
    span = Horizon(0, 4)
    easy = service_spec("rps", 10.0, 4, 30.0)
    assert needed_replicas(requests(0.5), easy, WORLD, span) == [1, 1, 1, 0]
    # 3 requests in the centred minute at 1 request/min per replica: 3 replicas, capped at 2.
    hungry = service_spec("rps", 1 / 60, 2, 30.0)
    assert needed_replicas(requests(0.5, 1.0, 1.5), hungry, WORLD, span) == [2, 2, 2, 2]


# --- replays ---------------------------------------------------------------------------------


def test_single_request_is_one_cold_start() -> None:
    """Arrives at 0.5 at zero replicas: wake pass at step 1, ready at 11, served 11..13."""
    out = replay(requests(0.5), policy(), WORLD)
    assert (out.cold_requests, out.wakes, out.cut_in_flight) == (1, 1, 0)
    assert out.waits == [pytest.approx(10.5)]
    assert out.gpu_seconds == 13  # steps 1..13 of the horizon [-10, 14)


@pytest.mark.parametrize(
    ("arrivals", "keep_s", "cold", "wakes"),
    [
        pytest.param((0.5, 20.5, 40.5), 30.0, 1, 1, id="within-keep-alive-one-cold-start"),
        pytest.param((0.5, 200.5), 30.0, 2, 2, id="beyond-keep-alive-two"),
        pytest.param((0.5, 200.5), 300.0, 1, 1, id="long-keep-alive-bridges"),
        pytest.param((0.5, 3.0, 6.0), 0.0, 3, 1, id="arrivals-during-boot-all-wait"),
    ],
)
def test_cold_starts(arrivals: tuple[float, ...], keep_s: float, cold: int, wakes: int) -> None:
    out = replay(requests(*arrivals), policy(keep_s=keep_s), WORLD)
    assert (out.cold_requests, out.wakes, out.cut_in_flight) == (cold, wakes, 0)
    assert len(out.waits) == cold


@pytest.mark.parametrize(
    ("metric", "gpu_seconds"),
    [
        # concurrency: idle from the last pass with a request in flight (10), zero at pass 15.
        pytest.param("concurrency", 14, id="concurrency-drops-at-once"),
        # rps over 60 s: the rate stays above zero until 60, but the activator's exact last
        # request makes that a residue (decisions.scaling, rule 8): zero at the same pass.
        pytest.param("rps", 14, id="rps-residue-ignored"),
    ],
)
def test_scale_to_zero_after_zero_keep_alive(metric: ScalingMetric, gpu_seconds: int) -> None:
    out = replay(requests(0.5), policy(metric, keep_s=0.0), WORLD, Horizon(-C, 100))
    assert out.gpu_seconds == gpu_seconds


def test_keep_warm_never_waits() -> None:
    out = replay(requests(0.5, 500.0), policy(min_replicas=1), WORLD)
    assert out.cold_requests == 0
    assert out.gpu_seconds == horizon_of(requests(0.5, 500.0), WORLD).seconds


def test_adaptive_releases_sparse_traffic_sooner_than_5m() -> None:
    """Gaps of 200 s: the 5-minute keep-alive bridges them all, the adaptive one learns to
    release at once (cold start 10 s < 200 s)."""
    trace = requests(*(0.5 + 200.0 * k for k in range(20)))
    fixed = replay(trace, policy(keep_s=300.0), WORLD)
    adaptive = replay(trace, Policy("a", policy(keep_s=C).spec, Adaptive(min_gaps=4)), WORLD)
    assert fixed.cold_requests == 1
    assert adaptive.gpu_seconds < fixed.gpu_seconds / 3
    assert adaptive.cold_requests == 20


def test_split_fleet_is_seeded_complete_and_skewed() -> None:
    trace = requests(*range(2000))
    fleet = split_fleet(trace, 10, zipf_s=1.0, seed=3)
    assert fleet == split_fleet(trace, 10, zipf_s=1.0, seed=3)
    assert sorted(r.arrival_s for s in fleet for r in s) == [r.arrival_s for r in trace]
    sizes = [len(s) for s in fleet]
    assert sizes[0] > 3 * sizes[-1]
    with pytest.raises(ValueError, match="at least one service"):
        split_fleet(trace, 0)


def test_run_scenario_baselines() -> None:
    fleet = [requests(0.5, 100.0), requests(50.0)]
    s = run_scenario("t", fleet, "concurrency", 1.0, 2, WORLD, frontier=(10, 600))
    span = horizon_of(sorted(fleet[0] + fleet[1], key=lambda r: r.arrival_s), WORLD)
    assert s.always_on == 2 * 2 * span.seconds
    # service 0: steps 0..2 and 100..101 (2 + 3 busy + C + released gap C); service 1: 2 + C.
    assert s.optimum == (3 + 2 + C + C) + (2 + C)
    row = s.as_dict()
    assert set(row["policies"]) == {
        "fixed_5m",
        "fixed_cold_start",
        "adaptive",
        "adaptive_2x",
        "keep_warm",
        "keep_10s",
        "keep_600s",
    }
    assert row["policies"]["keep_warm"]["cold_requests"] == 0
    assert [p["keep_alive_s"] for p in row["frontier"]] == [10, 600]


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=120.0), min_size=1, max_size=12),
    service=st.sampled_from([1, 2, 20, 40]),
    metric=st.sampled_from(["rps", "concurrency"]),
    cold=st.sampled_from([0, 5, 20]),
)
def test_optimum_is_a_lower_bound_for_every_policy(
    gaps: list[float], service: int, metric: ScalingMetric, cold: int
) -> None:
    """With one replica at most and a fixed cold start, no policy costs less than the offline
    optimum under the cost model (GPU-seconds plus each wake's first wait): holding requests
    through a boot is not free. (The replay used to price waiting at nothing, and policies
    that made requests wait came out below the optimum.) No request is ever cut. The optimum
    is counted on 1-second steps: a policy may come out below it by that rounding alone."""
    arrivals = list(itertools.accumulate(gaps))
    model = ServiceModel(prefill_tokens_per_s=1000.0, decode_tokens_per_s=10.0)
    world = World(cold_start_s=cold, pass_interval_s=5, rate_window_s=60, service=model)
    trace = [Request(a, 0, 10 * service) for a in arrivals]
    s = run_scenario("p", [trace], metric, 1.0, 1, world, frontier=(10, 60))
    assert s.optimum <= s.always_on
    assert s.outcomes["keep_warm"].cold_requests == 0
    for out in s.outcomes.values():
        assert out.requests == len(arrivals)
        assert len(out.waits) == out.cold_requests
        assert len(out.wake_waits) <= out.wakes  # keep_warm boots with no request
        assert out.cut_in_flight == 0
        # The optimum is counted on 1-second steps, so each request's busy interval can round
        # up by under a second at each end: that much slack, and no more.
        assert out.cost >= s.optimum - 2.0 * len(arrivals), out.policy


# --- honesty: in flight, drawn cold starts, the frontier -------------------------------------


LONG = [Request(0.5, 0, 600)]  # one answer streaming for 60 s


def test_a_long_answer_is_never_cut() -> None:
    """rps, keep-alive 10 s: ready at 11, answered at 71; the last pass that sees it in flight
    is at 70, so the replica goes at the pass at 80 (billed steps 1..79), not 10 s after the
    arrival."""
    out = replay(LONG, policy("rps", keep_s=10.0), WORLD, Horizon(-C, 200))
    assert (out.cut_in_flight, out.drain_seconds) == (0, 0)
    assert out.gpu_seconds == 79


def test_without_in_flight_a_cut_is_counted_and_billed_to_the_end() -> None:
    """The scaler without the in-flight count goes to zero 10 s after the arrival; the replay
    counts the cut request and bills the replica until its answer is out (71)."""
    blind = replace(WORLD, in_flight_known=False)
    out = replay(LONG, policy("rps", keep_s=10.0), blind, Horizon(-C, 200))
    assert out.cut_in_flight == 1
    assert out.drain_seconds > 0
    assert out.gpu_seconds == 71 - 1  # steps 1..70: booting, serving, then draining


def test_cold_starts_are_drawn_per_boot_and_seeded() -> None:
    dist = load_cold_starts_from([5.0, 30.0])
    world = replace(WORLD, cold_starts=dist)
    trace = requests(*(0.5 + 100.0 * k for k in range(12)))
    a = replay(trace, policy(keep_s=0.0), world, seed=3)
    assert a.waits == replay(trace, policy(keep_s=0.0), world, seed=3).waits
    assert {int(w) for w in a.waits} >= {5, 30}  # both boots occurred (wait = boot + pass)
    assert world.optimum_cold_start_s == pytest.approx(17.5)


def load_cold_starts_from(values: list[float]) -> ColdStarts:
    return parse_cold_starts([[str(v)] for v in values])


def test_frontier_interpolates_between_undominated_points() -> None:
    s = run_scenario("f", [requests(0.5)], "concurrency", 1.0, 1, WORLD, frontier=())
    s.optimum = 100.0
    s.frontier = (10, 20, 30, 60)
    for keep, cost, cold in ((10, 130.0, 0.9), (20, 120.0, 0.8), (30, 140.0, 0.4), (60, 200, 0.1)):
        s.outcomes[f"keep_{keep}s"] = Outcome(
            f"keep_{keep}s", gpu_seconds=cost, requests=10, cold_requests=round(cold * 10)
        )
    # keep_10s is dominated by keep_20s (cheaper, fewer cold): the frontier runs 20 -> 30 -> 60.
    assert s.frontier_cold_at(1.0) == pytest.approx(0.8)
    assert s.frontier_cold_at(1.3) == pytest.approx(0.6)
    assert s.frontier_cold_at(1.7) == pytest.approx(0.25)
    assert s.frontier_cold_at(3.0) == pytest.approx(0.1)
