"""The simulated spot market: refusal windows from a CSV trace and from the outage model, a
launch refused with the provider's InsufficientCapacity and the engine reacting as the
capacity controller does, correlated group losses, hazard-rate preemptions, dropped jobs."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from tests.unit.test_simulate import write_inputs

from sparsam import cli
from sparsam.controllers import capacity as controller
from sparsam.decisions import capacity
from sparsam.providers.nodepool import InsufficientCapacity
from sparsam.simulate import engine
from sparsam.simulate.engine import EPOCH, Simulation, World, simulate
from sparsam.simulate.market import (
    Availability,
    OutageModel,
    RefusalTrace,
    SpotLaunches,
    SpotMarket,
    load_refusal_csv,
    parse_refusal_csv,
)
from sparsam.simulate.policies import Policy, make_pool
from sparsam.simulate.report import metrics, percentile
from sparsam.simulate.scenarios import standard_scenarios
from sparsam.simulate.traces import Job, SimulationError, TraceError

HOUR = 3600.0
REPO = Path(__file__).resolve().parents[2]


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311  (simulation draws, not cryptography)


# --- the CSV trace ------------------------------------------------------------------------


def test_csv_in_seconds_gives_the_refused_windows() -> None:
    text = (
        "timestamp,state\n"
        "# a comment\n"
        "0,available\n"
        "3600,refused\n"
        "5400,refused\n"  # no change: still the same window
        "7200,available\n"
        "\n"
        "10000,refused\n"
    )
    trace = parse_refusal_csv(text, "t.csv")
    assert trace.spans == ((3600.0, 7200.0), (10000.0, math.inf))


def test_csv_in_iso_time_starts_at_its_first_row() -> None:
    text = (
        "2024-05-01T10:00:00Z,available\n"
        "2024-05-01T11:00:00+00:00,refused\n"
        "2024-05-01T11:30:00,available\n"  # no zone: UTC
    )
    assert parse_refusal_csv(text).spans == ((3600.0, 5400.0),)


def test_availability_answers_from_the_windows() -> None:
    windows = Availability(RefusalTrace(((10.0, 20.0), (30.0, math.inf))), seeded(0))
    assert windows.refused_until(5.0) is None
    assert windows.refused_until(10.0) == 20.0
    assert windows.refused_until(20.0) is None
    assert windows.refused_until(1e9) == math.inf
    assert windows.refused_seconds(0.0, 40.0) == pytest.approx(20.0)


@pytest.mark.parametrize(
    ("text", "row", "says"),
    [
        pytest.param("timestamp,state\n0,available\n60,busy\n", 3, "neither", id="bad-state"),
        pytest.param("0,available\n60,refused\n30,available\n", 3, "strictly", id="out-of-order"),
        pytest.param("0,refused\n0,available\n", 2, "strictly", id="same-time"),
        pytest.param("0,available\nsoon,refused\n", 2, "neither seconds", id="bad-time"),
        pytest.param("0,available\n2024-05-01T10:00:00Z,refused\n", 2, "ISO", id="mixed"),
        pytest.param("0,available\n60,refused,x\n", 2, "3 field", id="three-fields"),
        pytest.param("-5,refused\n", 1, ">= 0", id="negative"),
    ],
)
def test_a_bad_csv_names_the_row(text: str, row: int, says: str) -> None:
    with pytest.raises(TraceError) as error:
        parse_refusal_csv(text, "zone.csv")
    assert f"zone.csv row {row}:" in str(error.value)
    assert says in str(error.value)


@pytest.mark.parametrize("text", ["", "timestamp,state\n", "# only a comment\n\n"])
def test_an_empty_csv_is_refused(text: str) -> None:
    with pytest.raises(TraceError, match="no rows"):
        parse_refusal_csv(text, "empty.csv")


def test_a_missing_csv_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no refusal trace at"):
        load_refusal_csv(tmp_path / "none.csv")


# --- the outage model -----------------------------------------------------------------------


def test_generated_outages_have_the_stated_statistics() -> None:
    model = OutageModel(refused_fraction=0.3, median_s=HOUR, p90_s=6 * HOUR)
    windows = Availability(model, seeded(42))
    horizon = 200_000 * HOUR
    spans = windows.windows_until(horizon)
    lengths = [min(e, horizon) - s for s, e in spans]
    assert len(lengths) > 5000
    assert windows.refused_seconds(0.0, horizon) / horizon == pytest.approx(0.3, abs=0.02)
    assert percentile(lengths, 50) == pytest.approx(HOUR, rel=0.08)
    assert percentile(lengths, 90) == pytest.approx(6 * HOUR, rel=0.1)
    again = Availability(model, seeded(42)).windows_until(horizon)
    assert again == spans


def test_no_refused_fraction_never_refuses() -> None:
    windows = Availability(OutageModel(0.0, HOUR, 2 * HOUR), seeded(1))
    assert windows.refused_until(1e9) is None


@pytest.mark.parametrize(
    ("fraction", "median", "p90"),
    [(1.0, HOUR, 2 * HOUR), (-0.1, HOUR, 2 * HOUR), (0.1, 0.0, HOUR), (0.1, 2 * HOUR, HOUR)],
)
def test_impossible_outage_models_are_refused(fraction: float, median: float, p90: float) -> None:
    with pytest.raises(SimulationError):
        OutageModel(fraction, median, p90)


@pytest.mark.parametrize(
    "kwargs",
    [{"hazard_per_hour": -1.0}, {"group_loss_per_hour": math.inf}, {"group_loss_fraction": 0.0}],
)
def test_impossible_markets_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(SimulationError):
        SpotMarket(**kwargs)  # type: ignore[arg-type]


# --- launches refused, and the reaction ----------------------------------------------------


def test_a_launch_in_a_refusal_window_raises_insufficient_capacity() -> None:
    launches = SpotLaunches({"spot": Availability(RefusalTrace(((100.0, 200.0),)), seeded(0))})
    launches.scale_up("spot", 2, 50.0)  # available: nothing raised
    with pytest.raises(InsufficientCapacity) as refused:
        launches.scale_up("spot", 2, 150.0)
    assert refused.value.pool == "spot"
    assert str(refused.value).startswith("pool spot: no spot capacity for 2 node(s)")
    launches.scale_up("on-demand", 5, 150.0)  # no market: never refuses


def spot_and_on_demand(*spot: str) -> Policy:
    pools = [make_pool(name, "spot", 8, 0.3, max_nodes=10) for name in spot]
    pools.append(make_pool("od", "on-demand", 8, 1.0, max_nodes=10))
    return Policy("sparsam", tuple(pools), spot="Prefer")


def refusing(until: float, hazard: float = 0.0) -> SpotMarket:
    return SpotMarket(hazard_per_hour=hazard, refusals=RefusalTrace(((0.0, until),)))


def test_the_engine_reacts_to_a_refusal_as_the_controller_does() -> None:
    """Same functions as the capacity controller: the refused pool's offering is
    refused_offering(now), and the plan made knowing it sends the job to on-demand."""
    assert vars(engine)["refused_offering"] is capacity.refused_offering
    assert vars(controller)["refused_offering"] is capacity.refused_offering
    assert vars(engine)["expire_offerings"] is capacity.expire_offerings
    world = World(
        provisioning_delay_s=0.0,
        checkpoint_cost_s=0.0,
        markets={"spot": refusing(2 * HOUR)},
    )
    sim = Simulation([Job("a", 8, HOUR, 0.0)], spot_and_on_demand("spot"), world)
    outcome = sim.run()
    refused = capacity.refused_offering(EPOCH, timedelta(seconds=world.offering_ttl_s))
    # By the end the TTL has run out, as the controller's _expire_offerings would have it.
    later = EPOCH + timedelta(seconds=outcome.end_s)
    assert (
        sim.state.offerings["spot"] == capacity.expire_offerings({"spot": refused}, later)["spot"]
    )
    assert sim.state.offerings["spot"].last_failure == EPOCH
    assert outcome.pools["spot"].refusals == 1
    assert outcome.pools["spot"].launched == 0
    assert outcome.pools["od"].launched == 1
    assert outcome.cost == pytest.approx(8 * 1.0)  # one on-demand node for the hour
    assert outcome.jobs[0].finished == pytest.approx(HOUR)


def test_a_refused_spot_pool_sends_pods_to_another_spot_pool_first() -> None:
    world = World(
        provisioning_delay_s=0.0, checkpoint_cost_s=0.0, markets={"spot-a": refusing(HOUR)}
    )
    outcome = simulate([Job("a", 8, HOUR, 0.0)], spot_and_on_demand("spot-a", "spot-b"), world)
    assert outcome.pools["spot-a"].refusals == 1
    assert outcome.pools["spot-b"].launched == 1
    assert outcome.pools["od"].launched == 0
    assert outcome.cost == pytest.approx(8 * 0.3)


def test_after_the_window_spot_launches_again() -> None:
    jobs = [Job("early", 8, HOUR, 0.0), Job("late", 8, HOUR, 3 * HOUR)]
    world = World(provisioning_delay_s=0.0, checkpoint_cost_s=0.0, markets={"spot": refusing(HOUR)})
    outcome = simulate(jobs, spot_and_on_demand("spot"), world)
    assert outcome.pools["od"].launched == 1
    assert outcome.pools["spot"].launched == 1
    assert outcome.pools["spot"].refused_time_fraction == pytest.approx(HOUR / (4 * HOUR))


# --- correlated losses and the hazard --------------------------------------------------------


def test_a_group_loss_preempts_the_whole_group_at_once() -> None:
    job = Job("wide", 32, 10 * HOUR, 0.0)  # 4 pods on 4 nodes
    market = SpotMarket(group_loss_per_hour=0.5, group_loss_fraction=1.0)
    world = World(
        provisioning_delay_s=0.0,
        checkpoint_cost_s=60.0,
        checkpoint_interval_s=1800.0,
        markets={"spot": market},
    )
    outcome = simulate([job], spot_and_on_demand("spot"), world)
    stats = outcome.pools["spot"]
    assert stats.group_losses > 0
    assert stats.preemptions == 4 * stats.group_losses  # every event takes all four
    (run,) = outcome.jobs
    assert run.finished is not None
    assert run.interruptions >= 1


def test_hazard_rate_preemptions_match_the_configured_rate() -> None:
    job = Job("long", 64, 100 * HOUR, 0.0)  # 8 nodes for 100 h
    world = World(
        provisioning_delay_s=0.0,
        checkpoint_cost_s=60.0,
        seed=7,
        markets={"spot": SpotMarket(hazard_per_hour=0.5)},
    )
    outcome = simulate([job], spot_and_on_demand("spot"), world)
    stats = outcome.pools["spot"]
    assert stats.node_hours > 800
    assert stats.preemptions / stats.node_hours == pytest.approx(0.5, rel=0.1)


def test_a_job_that_can_never_run_is_dropped_and_counted() -> None:
    jobs = [Job("fits", 8, HOUR, 0.0), Job("huge", 8 * 25, HOUR, 0.0)]  # 25 nodes; 10 + 10 exist
    outcome = simulate(jobs, spot_and_on_demand("spot"), World(checkpoint_cost_s=0.0))
    assert outcome.dropped == ["huge"]
    row = metrics(outcome, static_cost=outcome.cost, floor=1.0)
    assert row.jobs_dropped == 1
    assert row.jct_inflation_p95 == math.inf  # a dropped job never improves the p95


def test_the_standard_scenarios_cover_the_measured_market() -> None:
    names = {s.name for s in standard_scenarios()}
    for pools in ("1pool", "3pools"):
        for kind in ("hazard-0.2", "hazard-0.5", "refusal-10pct", "refusal-50pct", "group-loss"):
            assert f"{kind}-{pools}" in names
    assert "advisor" in names


def test_the_benchmark_refuses_a_negative_job_count() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "capacity.py"), "--max-jobs", "-5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--max-jobs: must be at least 1, not -5" in done.stderr
    assert "Traceback" not in done.stderr


# --- the command ----------------------------------------------------------------------------


def test_simulate_takes_a_refusal_trace_and_reports_per_pool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, advisor = write_inputs(tmp_path)
    refusals = tmp_path / "zone.csv"
    refusals.write_text("timestamp,state\n0,refused\n36000,available\n")
    args = ["simulate", "--trace", str(trace), "--spot-advisor", str(advisor)]
    args += ["--out", str(tmp_path / "out"), "--refusal-trace", str(refusals)]
    assert cli.main([*args, "--spot-pools", "2", "--spot-hazard", "0.02"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pools = summary["market"]["pools"]
    assert set(pools) == {"spot-a", "spot-b", "on-demand"}
    # Both pools read the same trace: both refuse for the first 10 h, on-demand runs the jobs.
    assert pools["spot-a"]["refusals"] >= 1 and pools["spot-b"]["refusals"] >= 1
    assert pools["on-demand"]["launched"] >= 1
    assert summary["policies"]["sparsam"]["jobs_dropped"] == 0


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--refusal-trace", "{tmp}/bad.csv"], "bad.csv row 2: state 'maybe'"),
        (["--refused-fraction", "1.5"], "refused fraction must be in [0, 1)"),
        (["--group-loss-fraction", "0"], "group loss fraction"),
        (["--spot-pools", "30"], "between 1 and 26 spot pools"),
    ],
)
def test_simulate_refuses_a_bad_market_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    trace, advisor = write_inputs(tmp_path)
    (tmp_path / "bad.csv").write_text("0,available\n60,maybe\n")
    args = ["simulate", "--trace", str(trace), "--spot-advisor", str(advisor)]
    assert cli.main([*args, *(e.format(tmp=tmp_path) for e in extra)]) == 1
    err = capsys.readouterr().err
    assert says in err
    assert "Traceback" not in err
