"""The deadline-aware spot decision (`decisions.spot_deadline`) and how the simulator uses it."""

from __future__ import annotations

import math

import pytest

from sparsam.decisions.spot_deadline import SpotOutlook, spot_is_safe, spot_until_s
from sparsam.simulate.engine import Simulation, World
from sparsam.simulate.policies import Policy, make_pool
from sparsam.simulate.traces import Job

HOUR = 3600.0


def outlook(
    workers: int = 1, hazard: float = 0.2, interval: float = 1800.0, on_demand: float = 3600.0
) -> SpotOutlook:
    return SpotOutlook(
        workers=workers,
        hazard_per_node_hour=hazard,
        interval_s=interval,
        write_s=60.0,
        restart_s=120.0,
        on_demand_interval_s=on_demand,
    )


def test_slowdown_is_checkpoints_plus_half_a_period_and_a_restart_per_preemption() -> None:
    rate = 2 * 0.5 / HOUR  # two workers at 0.5 per node-hour
    expected = 60 / 1800 + rate * (1800 + 60) / 2 + rate * 120
    assert outlook(workers=2, hazard=0.5).slowdown == pytest.approx(expected)


def test_no_hazard_costs_only_the_checkpoints() -> None:
    assert outlook(hazard=0.0).slowdown == pytest.approx(60 / 1800)


def test_a_wider_gang_is_slowed_more() -> None:
    assert outlook(workers=8).slowdown > outlook(workers=1).slowdown


BOUND = 10 * HOUR * 1.15
#: Going to on-demand: a restart and the work left; plus one lost period and restart,
#: weighted by the chance of a preemption in the rest of the run on spot (0.2/h, 10 h).
HIT = 1 - math.exp(-0.2 * 10 * (1 + 60 / 1800))
WORST_FRESH = 120 + 10 * HOUR * (1 + 60 / 3600) + HIT * (1800 + 120)


@pytest.mark.parametrize(
    ("elapsed", "remaining", "spot"),
    [
        pytest.param(0.0, 10 * HOUR, True, id="fresh-job-with-slack"),
        pytest.param(BOUND - WORST_FRESH - 1, 10 * HOUR, True, id="one-second-of-slack"),
        pytest.param(BOUND - WORST_FRESH + 1, 10 * HOUR, False, id="one-second-too-late"),
        pytest.param(11.5 * HOUR, 0.0, True, id="nothing-left"),
    ],
)
def test_spot_while_on_demand_could_still_meet_the_bound_after_one_more_loss(
    elapsed: float, remaining: float, spot: bool
) -> None:
    got = spot_is_safe(outlook=outlook(), elapsed_s=elapsed, remaining_s=remaining, bound_s=BOUND)
    assert got is spot


def test_a_short_job_starts_on_demand() -> None:
    # Six minutes of slack cannot cover its checkpoints, a restart and the risk of losing a
    # half-hour period.
    assert not spot_is_safe(outlook=outlook(), elapsed_s=0.0, remaining_s=HOUR, bound_s=1.1 * HOUR)


def test_a_short_job_at_a_negligible_hazard_runs_on_spot() -> None:
    o = outlook(hazard=0.0002, interval=3600.0)
    assert spot_is_safe(outlook=o, elapsed_s=0.0, remaining_s=HOUR, bound_s=1.1 * HOUR)


def test_spot_until_is_the_slack_over_its_erosion() -> None:
    o = outlook()
    slack = BOUND - WORST_FRESH
    erosion = 1 - (1 + 60 / 3600) / (1 + 60 / 1800)
    got = spot_until_s(outlook=o, elapsed_s=0.0, remaining_s=10 * HOUR, bound_s=BOUND)
    assert got == pytest.approx(slack / erosion)


def test_spot_until_is_unbounded_when_spot_checkpoints_cost_no_more() -> None:
    o = outlook(interval=3600.0)
    assert spot_until_s(outlook=o, elapsed_s=0.0, remaining_s=HOUR, bound_s=3 * HOUR) == math.inf


def test_spot_until_is_zero_without_slack() -> None:
    assert spot_until_s(outlook=outlook(), elapsed_s=0.0, remaining_s=HOUR, bound_s=HOUR) == 0.0


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
    # Bound 10.5 h, no hazard known (no reserve). Preempted just before its first checkpoint:
    # 0.99 h lost, and 10 h x (1 + 60/3600) to go would end past the bound.
    outcome = run_with_a_preemption_at(0.99 * HOUR, 0.05).run()
    (run,) = outcome.jobs
    assert run.interruptions == 1
    assert run.pods[0].spot == "Never"
    assert outcome.pools["on-demand"].launched == 1
    # On on-demand (no hazard) the interval is the operator's maximum, 1 h: 60 s per hour.
    assert run.finished == pytest.approx(0.99 * HOUR + 10 * HOUR * (1 + 60 / 3600))


def test_a_job_with_slack_left_restarts_on_spot() -> None:
    outcome = run_with_a_preemption_at(0.2 * HOUR, 0.05).run()
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


def test_a_switch_keeps_the_work_to_a_fresh_checkpoint_and_moves_the_job_to_on_demand() -> None:
    sim = run_with_a_preemption_at(100 * HOUR, 0.20)  # the preemption comes too late to matter
    sim._push(2 * HOUR, "switch", (0, 0))
    outcome = sim.run()
    (run,) = outcome.jobs
    assert run.switches == 1 and run.interruptions == 0
    assert run.pods[0].spot == "Never"
    assert outcome.pools["on-demand"].launched == 1
    # The switch writes one checkpoint (60 s) and loses nothing else.
    assert run.finished == pytest.approx(2 * HOUR + 10 * HOUR * (1 + 60 / 3600) - (2 * HOUR - 60))
