"""The InferenceService autoscaling decision: load to replicas, clamps, missing data (None, NaN,
inf, negative), scale to zero and its idle clock, wake from zero, flapping traffic and the
scale-down stabilization window, phases (Active, ScaledToZero, Waking, Degraded), the spot /
on-demand split, and properties over random traffic (hypothesis)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsam.api.common import SpotPolicy
from sparsam.api.inferenceservice import InferenceServiceSpec, Model, Replicas, Scaling
from sparsam.decisions.scaling import (
    REASON_METRICS_UNAVAILABLE,
    REASON_REPLICAS_NOT_READY,
    REASON_SCALED_TO_ZERO,
    REASON_SERVING,
    REASON_WAKING,
    MetricSample,
    Recommendation,
    ScalerMemory,
    ScalingDecision,
    ScalingInput,
    ScalingSettings,
    decide_scaling,
    load_of,
    spot_split,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
S2Z = timedelta(minutes=5)
DELAY = timedelta(minutes=1)


def spec(
    min_: int = 0,
    max_: int = 10,
    target: float = 10.0,
    s2z: timedelta = S2Z,
    delay: timedelta = DELAY,
) -> InferenceServiceSpec:
    return InferenceServiceSpec(
        model=Model(uri="pvc://models/m"),
        replicas=Replicas(min=min_, max=max_),
        scaling=Scaling(target=target, scale_to_zero_after=s2z, scale_down_delay=delay),
    )


def ago(**kwargs: float) -> datetime:
    return T0 - timedelta(**kwargs)


def decide(
    load: float | None,
    replicas: int = 1,
    ready: int | None = None,
    *,
    s: InferenceServiceSpec | None = None,
    wake: bool = False,
    last_request: datetime | None = None,
    memory: ScalerMemory | None = None,
    now: datetime = T0,
) -> ScalingDecision:
    return decide_scaling(
        ScalingInput(
            spec=s or spec(),
            replicas=replicas,
            ready_replicas=replicas if ready is None else ready,
            sample=MetricSample(load, "" if load is not None else "Prometheus unreachable"),
            last_request_time=last_request,
            wake_requested=wake,
            memory=memory or ScalerMemory(),
        ),
        now,
    )


# A service that has been watched for an hour and last saw traffic `minutes` ago.
def idle_for(minutes: float) -> ScalerMemory:
    return ScalerMemory(last_traffic_time=ago(minutes=minutes), watching_since=ago(hours=1))


NAN = float("nan")
INF = float("inf")

# (load, replicas, ready, kwargs) -> (desired, phase, reason)
CASES: list[tuple[str, float | None, int, int | None, dict[str, Any], int, str, str]] = [
    ("scale-up-on-load", 35.0, 1, None, {}, 4, "Active", REASON_SERVING),
    ("exact-multiple", 20.0, 1, None, {}, 2, "Active", REASON_SERVING),
    ("float-noise-above-multiple", 20.000000000001, 2, None, {}, 2, "Active", REASON_SERVING),
    ("tiny-load-at-zero-wakes", 0.1, 0, None, {}, 1, "Waking", REASON_WAKING),
    ("clamp-to-max", 500.0, 2, None, {}, 10, "Active", REASON_SERVING),
    ("no-memory-holds-running-count", 10.0, 5, None, {}, 5, "Active", REASON_SERVING),
    ("lowered-max-clamps-at-once", 5.0, 12, None, {}, 10, "Active", REASON_SERVING),
    (
        "min-respected-idle",
        0.0,
        3,
        None,
        {"s": spec(min_=3), "memory": idle_for(60)},
        3,
        "Active",
        REASON_SERVING,
    ),
    ("min-respected-light-load", 5.0, 3, None, {"s": spec(min_=3)}, 3, "Active", REASON_SERVING),
    ("min-raises-from-zero", 0.0, 0, None, {"s": spec(min_=2)}, 2, "Waking", REASON_WAKING),
    ("concurrency-target", 3.0, 1, None, {"s": spec(target=1.5)}, 2, "Active", REASON_SERVING),
    # Missing data: never down, never to zero; MetricsUnavailable.
    (
        "missing-holds",
        None,
        4,
        None,
        {"memory": idle_for(60)},
        4,
        "Active",
        REASON_METRICS_UNAVAILABLE,
    ),
    (
        "nan-is-missing",
        NAN,
        4,
        None,
        {"memory": idle_for(60)},
        4,
        "Active",
        REASON_METRICS_UNAVAILABLE,
    ),
    ("inf-is-missing", INF, 4, None, {}, 4, "Active", REASON_METRICS_UNAVAILABLE),
    ("negative-is-missing", -1.0, 4, None, {}, 4, "Active", REASON_METRICS_UNAVAILABLE),
    (
        "missing-never-to-zero",
        None,
        1,
        None,
        {"memory": idle_for(600)},
        1,
        "Active",
        REASON_METRICS_UNAVAILABLE,
    ),
    ("missing-at-zero-stays", None, 0, None, {}, 0, "ScaledToZero", REASON_METRICS_UNAVAILABLE),
    (
        "missing-raises-to-min",
        None,
        0,
        None,
        {"s": spec(min_=2)},
        2,
        "Waking",
        REASON_METRICS_UNAVAILABLE,
    ),
    ("missing-lowered-max", None, 12, None, {}, 10, "Active", REASON_METRICS_UNAVAILABLE),
    (
        "missing-wake-scales-up",
        None,
        0,
        None,
        {"wake": True},
        1,
        "Waking",
        REASON_METRICS_UNAVAILABLE,
    ),
    (
        "missing-old-window-no-drop",
        None,
        6,
        None,
        {"memory": ScalerMemory((Recommendation(ago(hours=1), 6),))},
        6,
        "Active",
        REASON_METRICS_UNAVAILABLE,
    ),
    # Scale to zero.
    ("idle-before-s2z-keeps", 0.0, 1, None, {"memory": idle_for(4)}, 1, "Active", REASON_SERVING),
    (
        "idle-after-s2z-zero",
        0.0,
        1,
        None,
        {"memory": idle_for(6)},
        0,
        "ScaledToZero",
        REASON_SCALED_TO_ZERO,
    ),
    (
        "idle-exactly-s2z-zero",
        0.0,
        1,
        None,
        {"memory": idle_for(5)},
        0,
        "ScaledToZero",
        REASON_SCALED_TO_ZERO,
    ),
    (
        "recent-request-time-keeps",
        0.0,
        1,
        None,
        {"memory": idle_for(60), "last_request": ago(minutes=1)},
        1,
        "Active",
        REASON_SERVING,
    ),
    (
        "old-request-time-zero",
        0.0,
        1,
        None,
        {"memory": idle_for(60), "last_request": ago(minutes=30)},
        0,
        "ScaledToZero",
        REASON_SCALED_TO_ZERO,
    ),
    ("first-observation-starts-clock", 0.0, 1, None, {}, 1, "Active", REASON_SERVING),
    (
        "short-watch-keeps",
        0.0,
        1,
        None,
        {"memory": ScalerMemory(watching_since=ago(minutes=2))},
        1,
        "Active",
        REASON_SERVING,
    ),
    (
        "zero-skips-window",
        0.0,
        3,
        None,
        {"memory": replace(idle_for(6), recommendations=(Recommendation(ago(seconds=10), 3),))},
        0,
        "ScaledToZero",
        REASON_SCALED_TO_ZERO,
    ),
    (
        "min-above-zero-never-zero",
        0.0,
        1,
        None,
        {"s": spec(min_=1), "memory": idle_for(600)},
        1,
        "Active",
        REASON_SERVING,
    ),
    ("fresh-at-zero-stays", 0.0, 0, None, {}, 0, "ScaledToZero", REASON_SCALED_TO_ZERO),
    (
        "at-zero-recent-request-wakes",
        0.0,
        0,
        None,
        {"last_request": ago(seconds=10)},
        1,
        "Waking",
        REASON_WAKING,
    ),
    (
        "at-zero-old-request-stays",
        0.0,
        0,
        None,
        {"memory": idle_for(60), "last_request": ago(hours=1)},
        0,
        "ScaledToZero",
        REASON_SCALED_TO_ZERO,
    ),
    # Wake.
    (
        "wake-at-zero",
        0.0,
        0,
        None,
        {"wake": True, "memory": idle_for(60)},
        1,
        "Waking",
        REASON_WAKING,
    ),
    ("wake-with-load-follows-load", 25.0, 0, None, {"wake": True}, 3, "Waking", REASON_WAKING),
    (
        "wake-while-running-no-op",
        0.0,
        2,
        None,
        {"wake": True, "memory": ScalerMemory((Recommendation(ago(seconds=5), 2),))},
        2,
        "Active",
        REASON_SERVING,
    ),
    # Readiness.
    ("partly-ready-is-active", 30.0, 3, 1, {}, 3, "Active", REASON_SERVING),
    (
        "not-ready-within-grace",
        10.0,
        1,
        0,
        {"memory": ScalerMemory(unready_since=ago(minutes=4))},
        1,
        "Waking",
        REASON_WAKING,
    ),
    (
        "not-ready-past-grace",
        10.0,
        1,
        0,
        {"memory": ScalerMemory(unready_since=ago(minutes=6))},
        1,
        "Degraded",
        REASON_REPLICAS_NOT_READY,
    ),
    (
        "degraded-beats-metrics-unavailable",
        None,
        1,
        0,
        {"memory": ScalerMemory(unready_since=ago(minutes=6))},
        1,
        "Degraded",
        REASON_REPLICAS_NOT_READY,
    ),
]


@pytest.mark.parametrize(
    ("load", "replicas", "ready", "kwargs", "want", "phase", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decision(
    load: float | None,
    replicas: int,
    ready: int | None,
    kwargs: dict[str, Any],
    want: int,
    phase: str,
    reason: str,
) -> None:
    d = decide(load, replicas, ready, **kwargs)
    assert (d.replicas, d.phase, d.reason) == (want, phase, reason)
    assert d.ready_status == ("True" if phase in ("Active", "ScaledToZero") else "False")
    assert d.metrics_available == (load_of(MetricSample(load)) is not None)


@pytest.mark.parametrize(
    ("value", "want"),
    [(None, None), (NAN, None), (INF, None), (-INF, None), (-0.5, None), (0.0, 0.0), (3, 3.0)],
    ids=["none", "nan", "inf", "-inf", "negative", "zero", "int"],
)
def test_load_of(value: float | None, want: float | None) -> None:
    assert load_of(MetricSample(value)) == want


def test_metrics_unavailable_message_names_metric_and_reason() -> None:
    d = decide(None, 3)
    assert "rps" in d.message and "Prometheus unreachable" in d.message
    assert not d.metrics_available


def test_unready_since_starts_now_and_clears_when_ready() -> None:
    d = decide(10.0, 0, 0)
    assert d.memory.unready_since == T0
    assert decide(10.0, 1, 1, memory=d.memory).memory.unready_since is None
    assert decide(0.0, 0, 0).memory.unready_since is None  # none wanted


def test_last_scale_time() -> None:
    assert decide(50.0, 1).memory.last_scale_time == T0
    assert decide(10.0, 1).memory.last_scale_time is None


# -- sequences: the decision fed back into itself, as the controller does ----------------------


@dataclass
class Step:
    at: timedelta
    load: float | None
    wake: bool = False


def run(
    steps: list[Step], s: InferenceServiceSpec | None = None, start: int = 1
) -> list[ScalingDecision]:
    """Each decision is applied at once and every replica is ready at once."""
    memory, replicas, out = ScalerMemory(), start, []
    for step in steps:
        d = decide(step.load, replicas, s=s, wake=step.wake, memory=memory, now=T0 + step.at)
        memory, replicas = d.memory, d.replicas
        out.append(d)
    return out


def sec(n: float) -> timedelta:
    return timedelta(seconds=n)


def test_flapping_traffic_does_not_flap_replicas() -> None:
    # Load jumps between 50 and 5 rps every 10 s for 2 minutes: 5 replicas throughout.
    steps = [Step(sec(t), 50.0 if (t // 10) % 2 == 0 else 5.0) for t in range(0, 120, 10)]
    assert [d.replicas for d in run(steps)] == [5] * len(steps)


def test_scale_down_after_window() -> None:
    steps = [Step(sec(0), 50.0), *(Step(sec(t), 10.0) for t in range(10, 80, 10))]
    # The 5 of t=0 is in the window until t=60 (scaleDownDelay 1m).
    assert [d.replicas for d in run(steps)] == [5, 5, 5, 5, 5, 5, 1, 1]


def test_scale_down_to_highest_in_window() -> None:
    # Like the HPA: fall to the highest recommendation still in the window, step by step.
    steps = [Step(sec(0), 50.0), Step(sec(30), 30.0), Step(sec(40), 10.0), Step(sec(60), 10.0),
             Step(sec(89), 10.0), Step(sec(90), 10.0)]  # fmt: skip
    assert [d.replicas for d in run(steps)] == [5, 5, 5, 3, 3, 1]


def test_scale_up_is_immediate_inside_window() -> None:
    steps = [Step(sec(0), 10.0), Step(sec(1), 90.0)]
    assert [d.replicas for d in run(steps)] == [1, 9]


def test_window_stays_short() -> None:
    # A sliding maximum: one entry per distinct falling level, no matter how many calls.
    steps = [Step(sec(t), 35.0) for t in range(0, 600, 5)]
    assert len(run(steps)[-1].memory.recommendations) == 1


def test_metrics_gap_restarts_idle_clock_and_window() -> None:
    steps = [
        Step(sec(0), 50.0),
        *(Step(sec(t), None) for t in range(60, 660, 60)),  # 10 minutes without data
        Step(sec(620), 0.0),  # back, and idle: the count held at 600 s is still in the window
        Step(sec(659), 0.0),
        Step(sec(660), 0.0),  # 1 m after the last held recommendation: down to 1
        Step(sec(620 + 299), 0.0),
        Step(sec(620 + 300), 0.0),  # scaleToZeroAfter after data returned: zero
    ]
    ds = run(steps)
    assert [d.replicas for d in ds] == [5] + [5] * 10 + [5, 5, 1, 1, 0]
    assert all(d.reason == REASON_METRICS_UNAVAILABLE for d in ds[1:11])
    assert ds[-1].phase == "ScaledToZero"


def test_lifecycle_idle_to_zero_and_wake() -> None:
    steps = [
        Step(sec(0), 25.0),  # 3
        Step(sec(30), 0.0),  # idle from here: the window holds 3
        Step(sec(90), 0.0),  # window passed: 1
        Step(sec(299), 0.0),  # not yet 5 m since the last traffic (t=0): still 1
        Step(sec(300), 0.0),  # 5 m: zero
        Step(sec(400), 0.0),
        Step(sec(500), 0.0, wake=True),  # a request at zero
        Step(sec(510), 0.0),  # the wake counts as traffic: stays 1
        Step(sec(500 + 299), 0.0),
        Step(sec(500 + 300), 0.0),
    ]
    ds = run(steps)
    assert [d.replicas for d in ds] == [3, 3, 1, 1, 0, 0, 1, 1, 1, 0]
    assert [d.phase for d in ds][4:8] == ["ScaledToZero", "ScaledToZero", "Waking", "Active"]


def test_wake_is_waking_until_ready() -> None:
    at_zero = ScalerMemory(watching_since=ago(hours=1), last_traffic_time=ago(hours=1))
    woke = decide(0.0, 0, wake=True, memory=at_zero)
    assert (woke.replicas, woke.phase) == (1, "Waking")
    starting = decide(0.0, 1, 0, memory=woke.memory, now=T0 + sec(20))
    assert (starting.replicas, starting.phase) == (1, "Waking")
    ready = decide(0.0, 1, 1, memory=starting.memory, now=T0 + sec(40))
    assert (ready.replicas, ready.phase) == (1, "Active")


# -- properties -----------------------------------------------------------------------------

loads = st.one_of(
    st.none(),
    st.just(NAN),
    st.just(INF),
    st.floats(min_value=-5, max_value=500, allow_nan=False),
    st.just(0.0),
)


@st.composite
def specs(draw: st.DrawFn) -> InferenceServiceSpec:
    max_ = draw(st.integers(1, 12))
    return spec(
        min_=draw(st.integers(0, max_)),
        max_=max_,
        target=draw(st.floats(0.1, 50)),
        s2z=sec(draw(st.integers(0, 600))),
        delay=sec(draw(st.integers(0, 300))),
    )


steps_st = st.lists(
    st.tuples(st.integers(0, 400), loads, st.booleans(), st.integers(0, 15), st.floats(0, 1)),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(s=specs(), steps=steps_st)
def test_invariants_over_random_traffic(
    s: InferenceServiceSpec, steps: list[tuple[int, float | None, bool, int, float]]
) -> None:
    """Desired is always within [min, max] (so within [0, max], and never below min: no
    exception); 0 only when min is 0 and either the metric is present or the service was
    already at 0 with no wake request; with metrics missing it never falls below the current
    count (except to a lowered max), so never 0 while replicas run; a wake request gives >= 1;
    phase ScaledToZero exactly when desired is 0; deciding again at the same instant on the
    applied decision changes nothing."""
    memory, now = ScalerMemory(), T0
    lo, hi = s.replicas.min, s.replicas.max
    for dt, load, wake, current, ready_frac in steps:
        now += sec(dt)
        ready = math.floor(current * ready_frac)
        inp = ScalingInput(
            s, current, ready, MetricSample(load, "x"), wake_requested=wake, memory=memory
        )
        d = decide_scaling(inp, now)
        missing = load_of(MetricSample(load)) is None
        assert lo <= d.replicas <= hi
        assert 0 <= d.replicas <= hi
        if d.replicas == 0:
            assert lo == 0
            assert (not missing) or (current == 0 and not wake)
        if missing:
            assert d.replicas >= min(current, hi)
            assert d.metrics_available is False
            if current > 0:
                assert d.replicas > 0
        if wake:
            assert d.replicas >= 1
        assert (d.phase == "ScaledToZero") == (d.replicas == 0)
        again = decide_scaling(replace(inp, replicas=d.replicas, memory=d.memory), now)
        assert again.replicas == d.replicas
        memory = d.memory


# -- spot / on-demand split -------------------------------------------------------------------

SPLITS: list[tuple[str, int, int, SpotPolicy, tuple[int, int]]] = [
    ("never-all-on-demand", 5, 2, "Never", (5, 0)),
    ("never-zero", 0, 0, "Never", (0, 0)),
    ("require-all-spot", 5, 0, "Require", (0, 5)),
    ("require-ignores-invalid-base", 5, 2, "Require", (0, 5)),
    ("prefer-base-then-spot", 5, 2, "Prefer", (2, 3)),
    ("prefer-base-above-desired", 1, 2, "Prefer", (1, 0)),
    ("prefer-no-base", 4, 0, "Prefer", (0, 4)),
    ("prefer-at-zero", 0, 2, "Prefer", (0, 0)),
]


@pytest.mark.parametrize(
    ("desired", "base", "policy", "want"), [c[1:] for c in SPLITS], ids=[c[0] for c in SPLITS]
)
def test_spot_split(desired: int, base: int, policy: SpotPolicy, want: tuple[int, int]) -> None:
    assert spot_split(desired, base, policy) == want


@pytest.mark.parametrize(("desired", "base"), [(-1, 0), (1, -1)], ids=["desired", "base"])
def test_spot_split_rejects_negative(desired: int, base: int) -> None:
    with pytest.raises(ValueError, match="negative"):
        spot_split(desired, base, "Prefer")


@given(
    desired=st.integers(0, 100),
    base=st.integers(0, 100),
    policy=st.sampled_from(["Prefer", "Require", "Never"]),
)
def test_spot_split_properties(desired: int, base: int, policy: SpotPolicy) -> None:
    on_demand, spot = spot_split(desired, base, policy)
    assert on_demand >= 0 and spot >= 0 and on_demand + spot == desired
    if policy == "Never":
        assert spot == 0
    if policy == "Require":
        assert on_demand == 0
    if policy == "Prefer":
        assert on_demand == min(base, desired)


# -- rule 8: an exact lastRequestTime ends the rate window's residue ---------------------------


def residue_run(metric: str, exact: bool) -> list[int]:
    """One request at t=0, then nothing; the metric decays like a 1m trailing rate (rps) or
    stays at the one request in flight for 2 minutes (concurrency). scaleToZeroAfter 30s."""
    s = spec()
    s = replace(s, scaling=replace(s.scaling, metric=metric, scale_to_zero_after=sec(30)))
    config = ScalingSettings(exact_last_request=exact)
    memory, replicas, out = ScalerMemory(), 1, []
    for t in range(0, 130, 10):
        load = (0.1 if t < 60 else 0.0) if metric == "rps" else (1.0 if t < 120 else 0.0)
        d = decide_scaling(
            ScalingInput(
                spec=s,
                replicas=replicas,
                ready_replicas=replicas,
                sample=MetricSample(load),
                last_request_time=T0,
                memory=memory,
                settings=config,
            ),
            T0 + sec(t),
        )
        memory, replicas = d.memory, d.replicas
        out.append(replicas)
    return out


@pytest.mark.parametrize(
    ("metric", "exact", "zero_at"),
    [
        # The residue ends with the last request's scaleToZeroAfter, not a window later.
        pytest.param("rps", True, 30, id="rps-exact"),
        # Without one, the rate is traffic until it decays (last seen above zero at 50 s),
        # and scaleToZeroAfter counts from there.
        pytest.param("rps", False, 80, id="rps-trailing"),
        # A request in flight is never a residue, exact or not.
        pytest.param("concurrency", True, None, id="concurrency-in-flight"),
    ],
)
def test_exact_last_request_ends_the_rate_residue(
    metric: str, exact: bool, zero_at: int | None
) -> None:
    replicas = residue_run(metric, exact)
    times = list(range(0, 130, 10))
    first_zero = next((t for t, r in zip(times, replicas, strict=True) if r == 0), None)
    assert first_zero == zero_at, replicas


# --- rule 9: never cut a request in flight; rule 10: wake sizing -----------------------------


def exact_rps() -> InferenceServiceSpec:
    s = spec(target=2.0, s2z=sec(30))
    return replace(s, scaling=replace(s.scaling, metric="rps"))


def in_flight_run(in_flight: list[float | None]) -> list[int]:
    """An rps service whose only request arrived at 0 and streams its answer; a pass every
    10 s with the exact last request (rule 8) and the given in-flight counts."""
    s, memory, replicas, out = exact_rps(), ScalerMemory(), 1, []
    for k, flying in enumerate(in_flight):
        d = decide_scaling(
            ScalingInput(
                spec=s,
                replicas=replicas,
                ready_replicas=replicas,
                sample=MetricSample(1 / 60),  # the trailing rate's residue
                last_request_time=T0,
                in_flight=flying,
                memory=memory,
                settings=ScalingSettings(exact_last_request=True),
            ),
            T0 + sec(10 * k),
        )
        memory, replicas = d.memory, d.replicas
        out.append(replicas)
    return out


def test_request_in_flight_is_never_cut() -> None:
    """The answer streams until 50 s: scaleToZeroAfter (30 s) counts from the last pass that
    saw it in flight (50 s), not from the arrival (0 s)."""
    replicas = in_flight_run([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    assert replicas == [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]


def test_unknown_in_flight_keeps_the_arrival_clock() -> None:
    """Without the count (None, or NaN), the clock runs from the last arrival as before."""
    assert in_flight_run([None] * 6) == [1, 1, 1, 0, 0, 0]
    assert in_flight_run([NAN] * 6) == [1, 1, 1, 0, 0, 0]


def test_in_flight_wakes_a_service_at_zero() -> None:
    d = decide(0.0, replicas=0, s=exact_rps(), memory=idle_for(60))
    assert d.replicas == 0
    woken = decide_scaling(
        ScalingInput(
            spec=exact_rps(),
            replicas=0,
            ready_replicas=0,
            sample=MetricSample(0.0),
            in_flight=1.0,
            memory=idle_for(60),
        ),
        T0,
    )
    assert woken.replicas == 1


@pytest.mark.parametrize(
    ("load", "held", "ready", "want"),
    [
        # The metric counts 40 (held requests counted by two sources): 3 replicas, not 10.
        pytest.param(40.0, 10, 0, 3, id="held-caps-the-wake"),
        pytest.param(40.0, 1, 0, 1, id="one-held-one-replica"),
        pytest.param(8.0, 100, 0, 2, id="never-above-the-metric"),
        pytest.param(40.0, 10, 1, 10, id="ready-replica-no-cap"),
        pytest.param(40.0, 0, 0, 10, id="nothing-held-no-cap"),
        pytest.param(40.0, None, 0, 10, id="unknown-held-no-cap"),
    ],
)
def test_wake_sized_by_held_requests(load: float, held: int | None, ready: int, want: int) -> None:
    s = spec(target=4.0)
    d = decide_scaling(
        ScalingInput(
            spec=replace(s, scaling=replace(s.scaling, metric="concurrency")),
            replicas=ready,
            ready_replicas=ready,
            sample=MetricSample(load),
            wake_requested=True,
            held_requests=held,
        ),
        T0,
    )
    assert d.replicas == want
