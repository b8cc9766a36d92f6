"""The trace-driven simulator: loading traces, the stated conversions, runs whose answer is
known, preemption and checkpoints, the three policies' order, and the CLI's JSON last line."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sparsam import cli
from sparsam.decisions import capacity
from sparsam.simulate import engine
from sparsam.simulate.compare import Settings, compare_jobs
from sparsam.simulate.engine import Simulation, World, simulate
from sparsam.simulate.policies import Policy, make_pool, peak_demand, pod_gpus, three_policies
from sparsam.simulate.report import percentile
from sparsam.simulate.spot import (
    band_probability,
    checkpoint_interval_s,
    hourly_hazard,
    spot_price,
)
from sparsam.simulate.traces import (
    PHILLY_FILE,
    SPOT_ADVISOR_FILE,
    Job,
    SpotOffer,
    TraceError,
    default_trace_dir,
    parse_philly,
    parse_spot_advisor,
)

HOUR = 3600.0
NO_DELAY = World(provisioning_delay_s=0.0, spot_hazard_per_hour=0.0, checkpoint_cost_s=0.0)


def record(ident: str, gpus: int, minutes: float, submitted: str) -> dict[str, Any]:
    return {
        "id": ident,
        "num_gpus": gpus,
        "runtime": minutes,
        "submitted_time": submitted,
        "attempts": [],
    }


ADVISOR: dict[str, Any] = {
    "ranges": [
        {"index": 0, "label": "<5%", "max": 5},
        {"index": 1, "label": "5-10%", "max": 11},
        {"index": 2, "label": "10-15%", "max": 16},
        {"index": 3, "label": "15-20%", "max": 22},
        {"index": 4, "label": ">20%", "max": 100},
    ],
    "spot_advisor": {"us-east-1": {"Linux": {"p4d.24xlarge": {"s": 67, "r": 2}}}},
    "instance_types": {"p4d.24xlarge": {"cores": 96, "ram_gb": 1152.0}},
}


# --- traces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "max_jobs", "expected"),
    [
        pytest.param(
            [
                record("b", 8, 30, "2017-10-01 00:10:00"),
                record("a", 4, 60, "2017-10-01 00:00:00"),
            ],
            None,
            [Job("a", 4, 3600.0, 0.0), Job("b", 8, 1800.0, 600.0)],
            id="sorted-by-submission-times-relative-runtime-in-seconds",
        ),
        pytest.param(
            [
                record("b", 8, 30, "2017-10-01 00:10:00"),
                record("a", 4, 60, "2017-10-01 00:00:00"),
                record("c", 16, 1, "2017-10-02 00:00:00"),
            ],
            2,
            [Job("a", 4, 3600.0, 0.0), Job("b", 8, 1800.0, 600.0)],
            id="max-jobs-takes-the-first-by-submission",
        ),
        pytest.param(
            [
                record("zero", 0, 30, "2017-10-01 00:00:00"),
                record("norun", 8, 0, "2017-10-01 00:00:00"),
                record("ok", 8, 2, "2017-10-01 01:00:00"),
            ],
            None,
            [Job("ok", 8, 120.0, 0.0)],
            id="skips-jobs-without-gpus-or-runtime",
        ),
        pytest.param([], None, [], id="empty"),
    ],
)
def test_parse_philly(
    records: list[dict[str, Any]], max_jobs: int | None, expected: list[Job]
) -> None:
    assert parse_philly(records, max_jobs) == expected


def test_parse_philly_names_a_bad_record() -> None:
    with pytest.raises(TraceError, match="num_gpus"):
        parse_philly([{"id": "x", "runtime": 1, "submitted_time": "2017-10-01 00:00:00"}])


@pytest.mark.parametrize(
    ("region", "instance", "expected"),
    [
        pytest.param(
            "us-east-1",
            "p4d.24xlarge",
            SpotOffer("us-east-1", "p4d.24xlarge", 67, 2, "10-15%", 16.0),
            id="found",
        ),
        pytest.param("eu-west-1", "p4d.24xlarge", None, id="unknown-region"),
        pytest.param("us-east-1", "p9.huge", None, id="unknown-instance"),
    ],
)
def test_parse_spot_advisor(region: str, instance: str, expected: SpotOffer | None) -> None:
    if expected is None:
        with pytest.raises(TraceError, match=instance):
            parse_spot_advisor(ADVISOR, region, instance)
    else:
        assert parse_spot_advisor(ADVISOR, region, instance) == expected


# --- conversions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("band", "probability"),
    [
        pytest.param(0, 0.025, id="lt5"),
        pytest.param(1, 0.075, id="5-10"),
        pytest.param(2, 0.125, id="10-15"),
        pytest.param(3, 0.175, id="15-20"),
        pytest.param(4, 0.25, id="gt20-assumed"),
    ],
)
def test_band_midpoints(band: int, probability: float) -> None:
    assert band_probability(band) == probability


@pytest.mark.parametrize(
    ("monthly", "per_hour"),
    [
        pytest.param(0.0, 0.0, id="never"),
        pytest.param(0.125, -math.log(0.875) / 730, id="band-2"),
        pytest.param(0.25, -math.log(0.75) / 730, id="band-4"),
        pytest.param(1 - math.exp(-1), 1 / 730, id="one-per-month-on-average"),
    ],
)
def test_hazard_survives_a_month_with_one_minus_p(monthly: float, per_hour: float) -> None:
    rate = hourly_hazard(monthly)
    assert rate == pytest.approx(per_hour)
    assert math.exp(-rate * 730) == pytest.approx(1 - monthly)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2.0], ids=["negative", "one", "above-one"])
def test_hazard_rejects_impossible_probabilities(bad: float) -> None:
    with pytest.raises(ValueError, match="monthly probability"):
        hourly_hazard(bad)


@pytest.mark.parametrize(
    ("saving", "price"),
    [pytest.param(67, 0.33, id="p4d"), pytest.param(0, 1.0, id="none")],
)
def test_spot_price_is_one_minus_saving(saving: int, price: float) -> None:
    assert spot_price(saving) == pytest.approx(price)


@pytest.mark.parametrize(
    ("cost", "hazard", "nodes", "tau"),
    [
        # MTBF 30 h = 108,000 s: sqrt(2 * 60 * 108000) = 3600.
        pytest.param(60.0, 1 / 30, 1, 3600.0, id="young-daly"),
        # Two nodes halve the MTBF: tau / sqrt(2).
        pytest.param(60.0, 1 / 30, 2, 3600.0 / math.sqrt(2), id="two-nodes"),
        # The operator's decision: nothing interrupts -> its maximum (1 h); free checkpoints
        # -> Young/Daly 0, clamped to its minimum (60 s).
        pytest.param(60.0, 0.0, 1, 3600.0, id="no-hazard"),
        pytest.param(0.0, 1 / 30, 1, 60.0, id="free-checkpoints"),
    ],
)
def test_checkpoint_interval(cost: float, hazard: float, nodes: int, tau: float) -> None:
    assert checkpoint_interval_s(cost, hazard, nodes) == pytest.approx(tau)


@pytest.mark.parametrize(
    ("gpus", "per_node", "pods"),
    [
        pytest.param(4, 8, [4], id="half-node"),
        pytest.param(8, 8, [8], id="one-node"),
        pytest.param(16, 8, [8, 8], id="two-nodes"),
        pytest.param(12, 8, [8, 4], id="node-and-rest"),
        pytest.param(8, 4, [4, 4], id="small-nodes"),
    ],
)
def test_rigid_job_as_pods(gpus: int, per_node: int, pods: list[int]) -> None:
    assert pod_gpus(gpus, per_node) == pods
    assert len(pods) == math.ceil(gpus / per_node)


def test_peak_demand() -> None:
    jobs = [Job("a", 8, 100, 0), Job("b", 4, 100, 50), Job("c", 16, 10, 100)]
    # a ends at 100 as c starts: c and b overlap (20), a and b overlap (12).
    assert peak_demand(jobs) == 20


def test_percentile_nearest_rank() -> None:
    assert percentile([0.0, 1.0, 2.0, 3.0], 50) == 1.0
    assert percentile(list(range(100)), 95) == 94
    assert percentile([], 95) == 0.0


# --- runs with a known answer ----------------------------------------------------------------


def on_demand(scale_down: timedelta = timedelta(minutes=10)) -> Policy:
    return Policy(
        "reactive",
        (make_pool("od", "on-demand", 8, 1.0, max_nodes=10, scale_down_after=scale_down),),
        spot="Never",
    )


def spot_only(price: float = 0.3) -> Policy:
    return Policy("sparsam", (make_pool("spot", "spot", 8, price, max_nodes=10),), spot="Prefer")


@pytest.mark.parametrize(
    ("jobs", "delay_s", "cost", "utilization", "inflation"),
    [
        pytest.param([Job("a", 8, HOUR, 0)], 0.0, 8.0, 1.0, 0.0, id="one-job-no-delay"),
        pytest.param(
            [Job("a", 8, HOUR, 0)], 120.0, 8 * (62 / 60), 60 / 62, 2 / 60, id="boot-is-paid"
        ),
        pytest.param(
            [Job("a", 4, HOUR, 0), Job("b", 4, HOUR, 0)],
            0.0,
            8.0,
            1.0,
            0.0,
            id="two-half-jobs-share-a-node",
        ),
        pytest.param(
            # The node idles 10 minutes after a, is removed, and b gets a new one.
            [Job("a", 8, HOUR, 0), Job("b", 8, HOUR, 2 * HOUR)],
            0.0,
            8 * (70 / 60) + 8.0,
            2 / (2 + 10 / 60),
            0.0,
            id="scale-down-after-10-idle-minutes",
        ),
        pytest.param(
            # b arrives while the idle node is still there: it takes it, no new node.
            [Job("a", 8, HOUR, 0), Job("b", 8, HOUR, HOUR + 300)],
            0.0,
            8 * (125 / 60),
            120 / 125,
            0.0,
            id="idle-node-reused-before-scale-down",
        ),
    ],
)
def test_known_answer_on_demand(
    jobs: list[Job], delay_s: float, cost: float, utilization: float, inflation: float
) -> None:
    world = World(provisioning_delay_s=delay_s, checkpoint_cost_s=0.0)
    outcome = simulate(jobs, on_demand(), world)
    assert outcome.cost == pytest.approx(cost)
    assert outcome.allocated_gpu_s / outcome.provisioned_gpu_s == pytest.approx(utilization)
    for run in outcome.jobs:
        assert run.finished is not None
        assert (run.finished - run.job.submit_s) / run.job.runtime_s - 1 == pytest.approx(inflation)


def test_static_pool_is_ready_from_the_start_and_queues_when_full() -> None:
    jobs = [Job("a", 8, HOUR, 0), Job("b", 8, HOUR, 0)]
    static = Policy(
        "static",
        (make_pool("static", "on-demand", 8, 1.0, max_nodes=1, min_nodes=1),),
        spot="Never",
        ready_at_start=True,
    )
    outcome = simulate(jobs, static, World(provisioning_delay_s=600.0, checkpoint_cost_s=0.0))
    finished = sorted(run.finished or 0 for run in outcome.jobs)
    assert finished == [HOUR, 2 * HOUR]  # no boot delay, b waits for a
    assert outcome.cost == pytest.approx(16.0)


def test_gang_waits_for_room_for_all_its_pods() -> None:
    jobs = [Job("small", 8, HOUR, 0), Job("big", 16, HOUR, 0)]
    pool = make_pool("static", "on-demand", 8, 1.0, max_nodes=2, min_nodes=2)
    outcome = simulate(jobs, Policy("static", (pool,), "Never", ready_at_start=True), NO_DELAY)
    by_id = {run.job.id: run for run in outcome.jobs}
    # big (16 GPUs, both nodes) is placed first; small waits rather than taking half the gang.
    assert by_id["big"].finished == HOUR
    assert by_id["small"].finished == 2 * HOUR


def test_preemption_loses_work_since_the_last_checkpoint_and_the_job_completes() -> None:
    job = Job("long", 8, 10 * HOUR, 0)
    world = World(
        provisioning_delay_s=0.0,
        spot_hazard_per_hour=0.0,  # no random preemptions: one at a known time
        checkpoint_cost_s=60.0,
        checkpoint_interval_s=3600.0,
    )
    sim = Simulation([job], spot_only(price=0.3), world)
    sim._push(5 * HOUR, "preempt", "spot-0")
    outcome = sim.run()
    (run,) = outcome.jobs
    period = 3600.0 + 60.0
    kept = 4 * period  # 5 h of running hold 4 full checkpoint periods
    lost = 5 * HOUR - kept
    wall = 10 * HOUR * (1 + 60 / 3600)
    assert outcome.node_preemptions == 1
    assert run.interruptions == 1
    assert run.lost_s == pytest.approx(lost)
    assert run.finished == pytest.approx(5 * HOUR + wall - kept)
    # The preempted node is paid until it goes, the replacement from then on.
    assert outcome.cost == pytest.approx(8 * 0.3 * (run.finished or 0) / HOUR)


def test_preempting_one_node_restarts_the_whole_gang() -> None:
    job = Job("wide", 16, 2 * HOUR, 0)
    world = World(provisioning_delay_s=0.0, checkpoint_cost_s=0.0, checkpoint_interval_s=1800.0)
    sim = Simulation([job], spot_only(price=0.3), world)
    sim._push(1.25 * HOUR, "preempt", "spot-0")
    outcome = sim.run()
    (run,) = outcome.jobs
    assert run.interruptions == 1
    assert run.lost_s == pytest.approx(0.25 * HOUR)  # back to the checkpoint at 1 h
    assert run.finished == pytest.approx(2.25 * HOUR)
    # Both pods restart together: the survivor (spot-1) is reused, one new node replaces
    # spot-0; spot-0 paid 1.25 h, spot-1 2.25 h, the replacement 1 h.
    assert outcome.cost == pytest.approx(8 * 0.3 * (1.25 + 2.25 + 1.0))


def test_random_preemptions_are_seeded() -> None:
    jobs = [Job(f"j{i}", 8, 20 * HOUR, i * 600.0) for i in range(6)]
    world = World(provisioning_delay_s=60.0, spot_hazard_per_hour=0.05, checkpoint_cost_s=60.0)
    first = simulate(jobs, spot_only(), world)
    again = simulate(jobs, spot_only(), world)
    assert first.node_preemptions > 0
    assert [r.finished for r in first.jobs] == [r.finished for r in again.jobs]
    assert all(run.finished is not None for run in first.jobs)


BURSTY = [
    *(Job(f"morning-{i}", 8 * (1 + i % 2), 2 * HOUR, i * 60.0) for i in range(8)),
    *(Job(f"evening-{i}", 4, HOUR, 24 * HOUR + i * 30.0) for i in range(6)),
    Job("lone", 8, 3 * HOUR, 48 * HOUR),
]


def test_three_policies_in_the_expected_order_on_a_bursty_trace() -> None:
    offer = SpotOffer("us-east-1", "p4d.24xlarge", 67, 2, "10-15%", 16.0)
    result = compare_jobs(BURSTY, offer, 8, Settings(seed=1))
    rows = result.by_policy()
    assert rows["static"].cost > rows["reactive"].cost > rows["sparsam"].cost
    assert rows["static"].cost_vs_static == 1.0
    assert rows["sparsam"].floor_gap >= 1.0
    assert rows["static"].allocation_utilization < rows["reactive"].allocation_utilization
    assert all(run.finished is not None for o in result.outcomes for run in o.jobs)


def test_the_engine_drives_the_planner_itself() -> None:
    """No copy of the planner: the engine calls decisions.capacity's own functions."""
    assert vars(engine)["plan_capacity"] is capacity.plan_capacity
    assert vars(engine)["apply_plan"] is capacity.apply_plan
    *_, sparsam = three_policies(BURSTY, 8, 0.33)
    outcome = simulate(BURSTY, sparsam, NO_DELAY)
    assert outcome.plans > 0


# --- the command --------------------------------------------------------------------------


def write_inputs(folder: Path) -> tuple[Path, Path]:
    records = [
        record(f"j{i}", 8 * (1 + i % 3), 30 + 10 * i, f"2017-10-01 0{i}:00:00") for i in range(6)
    ]
    trace = folder / PHILLY_FILE
    trace.write_text(json.dumps(records))
    advisor = folder / SPOT_ADVISOR_FILE
    advisor.write_text(json.dumps(ADVISOR))
    return trace, advisor


def test_simulate_prints_a_table_and_json_as_the_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, advisor = write_inputs(tmp_path)
    out = tmp_path / "out"
    code = cli.main(
        [
            "simulate",
            "--trace",
            str(trace),
            "--spot-advisor",
            str(advisor),
            "--out",
            str(out),
            "--seed",
            "3",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary["policies"]) == {"static", "reactive", "sparsam"}
    assert summary["seed"] == 3
    assert summary["hazard_per_node_hour"] == pytest.approx(-math.log(0.875) / 730)
    assert set(summary["targets"]) == {
        "cost_vs_static",
        "allocation_utilization",
        "jct_inflation_p95",
        "floor_gap",
    }
    assert any(line.startswith("| sparsam |") for line in lines)
    assert (out / "summary.json").is_file()
    if summary["plot"] is not None:
        assert Path(summary["plot"]).is_file()


def test_simulate_reports_a_missing_trace_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["simulate", "--trace", str(tmp_path / "none.json")]) == 1
    err = capsys.readouterr().err
    assert "no Philly trace" in err
    assert "Traceback" not in err


def test_real_philly_trace_replays_a_few_jobs(tmp_path: Path) -> None:
    traces = default_trace_dir()
    if not (traces / PHILLY_FILE).is_file() or not (traces / SPOT_ADVISOR_FILE).is_file():
        pytest.skip(f"shared data not found at {traces} (it sits beside the repository in CI)")
    from sparsam.simulate.compare import compare

    result = compare(Settings(max_jobs=25, seed=0), tmp_path)
    assert result.jobs == 25
    rows = result.by_policy()
    assert rows["static"].cost >= rows["reactive"].cost >= rows["sparsam"].cost
    assert all(run.finished is not None for o in result.outcomes for run in o.jobs)
    json.loads(result.json_line())
