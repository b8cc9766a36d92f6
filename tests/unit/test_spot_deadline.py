"""The deadline-aware spot decision (`decisions.spot_deadline`) and how the simulator uses it."""

from __future__ import annotations

import pytest

from sparsam.decisions.spot_deadline import SpotOutlook, restart_on_spot
from sparsam.simulate.engine import Simulation, World
from sparsam.simulate.policies import Policy, make_pool
from sparsam.simulate.traces import Job

HOUR = 3600.0


def outlook(workers: int = 1, hazard: float = 0.2, interval: float = 1800.0) -> SpotOutlook:
    return SpotOutlook(
        workers=workers,
        hazard_per_node_hour=hazard,
        interval_s=interval,
        write_s=60.0,
        restart_s=120.0,
    )


def test_slowdown_is_checkpoints_plus_half_a_period_and_a_restart_per_preemption() -> None:
    rate = 2 * 0.5 / HOUR  # two workers at 0.5 per node-hour
    expected = 60 / 1800 + rate * (1800 + 60) / 2 + rate * 120
    assert outlook(workers=2, hazard=0.5).slowdown == pytest.approx(expected)


def test_no_hazard_costs_only_the_checkpoints() -> None:
    assert outlook(hazard=0.0).slowdown == pytest.approx(60 / 1800)


def test_a_wider_gang_is_slowed_more() -> None:
    assert outlook(workers=8).slowdown > outlook(workers=1).slowdown


@pytest.mark.parametrize(
    ("elapsed", "remaining", "spot"),
    [
        pytest.param(0.0, 10 * HOUR, True, id="fresh-job-with-slack"),
        pytest.param(2 * HOUR, 9 * HOUR, False, id="slack-used-up"),
        pytest.param(11.5 * HOUR, 0.0, True, id="nothing-left"),
    ],
)
def test_spot_while_the_expected_finish_is_within_the_bound(
    elapsed: float, remaining: float, spot: bool
) -> None:
    got = restart_on_spot(
        outlook=outlook(), elapsed_s=elapsed, remaining_s=remaining, bound_s=10 * HOUR * 1.15
    )
    assert got is spot


def test_a_gang_too_wide_for_the_hazard_starts_on_demand() -> None:
    wide = outlook(workers=16, hazard=0.5, interval=300.0)
    assert wide.slowdown > 0.15
    assert not restart_on_spot(outlook=wide, elapsed_s=0.0, remaining_s=HOUR, bound_s=1.15 * HOUR)


def spot_and_on_demand() -> Policy:
    return Policy(
        "sparsam",
        (
            make_pool("spot", "spot", 8, 0.3, max_nodes=10),
            make_pool("on-demand", "on-demand", 8, 1.0, max_nodes=10),
        ),
        spot="Prefer",
    )


def run_with_a_preemption_at(when_s: float, spot_deadline: float | None) -> Simulation:
    job = Job("long", 8, 10 * HOUR, 0)
    world = World(
        provisioning_delay_s=0.0,
        checkpoint_cost_s=60.0,
        checkpoint_interval_s=3600.0,
        spot_deadline=spot_deadline,
    )
    sim = Simulation([job], spot_and_on_demand(), world)
    sim._push(when_s, "preempt", "spot-0")
    return sim


def test_a_job_that_used_its_slack_restarts_on_on_demand() -> None:
    # Preempted just before its first checkpoint: 0.99 h lost; 10 h x (1 + 60/3600) to go
    # on spot would end at 11.16 h, past the bound of 11 h.
    outcome = run_with_a_preemption_at(0.99 * HOUR, 0.10).run()
    (run,) = outcome.jobs
    assert run.interruptions == 1
    assert run.pods[0].spot == "Never"
    assert outcome.pools["on-demand"].launched == 1
    # On on-demand (no hazard) the interval is the operator's maximum, 1 h: 60 s per hour.
    assert run.finished == pytest.approx(0.99 * HOUR + 10 * HOUR * (1 + 60 / 3600))


def test_a_job_with_slack_left_restarts_on_spot() -> None:
    outcome = run_with_a_preemption_at(0.5 * HOUR, 0.10).run()
    (run,) = outcome.jobs
    assert run.pods[0].spot == "Prefer"
    assert outcome.pools["on-demand"].launched == 0


def test_the_previous_policy_keeps_the_job_on_spot() -> None:
    outcome = run_with_a_preemption_at(0.99 * HOUR, None).run()
    assert outcome.jobs[0].pods[0].spot == "Prefer"
    assert outcome.pools["on-demand"].launched == 0


def test_checkpoints_follow_the_pool_the_job_runs_on() -> None:
    # Hazard 0.5 on spot; the job lands on on-demand (spot refuses nothing here, so force
    # it: Never from the start because an 8-node gang at 0.5 cannot meet a 1 % budget).
    job = Job("wide", 64, HOUR, 0)
    world = World(provisioning_delay_s=0.0, spot_hazard_per_hour=0.5, spot_deadline=0.01)
    outcome = Simulation([job], spot_and_on_demand(), world).run()
    (run,) = outcome.jobs
    assert run.pods[0].spot == "Never"
    # On on-demand: the maximum interval (1 h) for a 1 h job, not the spot pool's short one.
    assert run.period_s == pytest.approx(HOUR + 60.0)
    assert run.finished == pytest.approx(HOUR * (1 + 60 / 3600))
