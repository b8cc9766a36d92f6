"""`decide_serving` as a pure function: what an InferenceService pass observed in, its plan
out. The replicas of each track, missing metrics that never shrink a service, scale to zero,
the wake and its cold start, the policy's say, asserted on the plan;
`test_serving_controller.py` asserts how the controller observes and carries a plan out."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from tests.unit.test_serving_controller import NOW, idle_policy, service

from sparsam.api.costpolicy import CostPolicy
from sparsam.api.inferenceservice import InferenceService
from sparsam.decisions.effective_policy import resolve_policy
from sparsam.decisions.scaling import MetricSample
from sparsam.decisions.serving_plan import ServingObserved, ServingPlan, decide_serving

FORMATS = frozenset({"pytorch", "torchscript"})


def observe(
    svc: InferenceService, rps: float | None = 0.0, replicas: int = 0, **seen: Any
) -> ServingObserved:
    """A pass that sees `replicas` Deployment replicas (all ready) and `rps` requests/s."""
    seen.setdefault("ready", replicas)
    sample = MetricSample(rps) if rps is not None else MetricSample(None, "unreachable")
    return ServingObserved(
        svc, FORMATS, "http://clf.web.svc.cluster.local", replicas, sample=sample, **seen
    )


def decide(
    observed: ServingObserved, policy: CostPolicy | None = None, now: datetime = NOW
) -> ServingPlan:
    return decide_serving(observed, resolve_policy(policy), now)


def condition(plan: ServingPlan, type_: str) -> dict[str, Any]:
    return next(c for c in plan.status["conditions"] if c["type"] == type_)


def reasons(plan: ServingPlan) -> list[str]:
    return [reason for _, reason, _ in plan.events]


def after(observed: ServingObserved, plan: ServingPlan) -> ServingObserved:
    """The next pass, with what the controller remembered of `plan`."""
    return replace(
        observed,
        scaler=plan.scaler,
        wake_handled=plan.wake_handled,
        waking_since=plan.waking_since,
    )


@pytest.mark.parametrize(
    ("rps", "spec", "split"),
    [
        pytest.param(25.0, {}, (0, 3), id="prefer-spot-all-on-main"),
        pytest.param(25.0, {"capacity": {"onDemandBase": 1}}, (1, 2), id="base-1"),
        pytest.param(
            25.0, {"capacity": {"spot": "Never", "onDemandBase": 1}}, (3, 0), id="never-one"
        ),
        pytest.param(500.0, {}, (0, 4), id="capped-at-max"),
    ],
)
def test_traffic_sets_the_replicas_of_each_track(
    rps: float, spec: dict[str, Any], split: tuple[int, int]
) -> None:
    plan = decide(observe(service(**spec), rps, replicas=1))
    assert (plan.on_demand, plan.by_policy) == split and plan.apply
    assert plan.replicas == plan.status["replicas"] == sum(split)
    assert plan.status["phase"] == "Active" and reasons(plan) == ["ScaledUp"]


def test_a_new_idle_service_with_min_zero_stays_at_zero() -> None:
    plan = decide(observe(service()))
    assert plan.replicas == 0 and plan.status["phase"] == "ScaledToZero" and plan.events == ()
    assert plan.status["url"] == "http://clf.web.svc.cluster.local"
    assert condition(plan, "Ready")["status"] == "True"
    assert condition(plan, "MetricsAvailable")["status"] == "True"


def test_missing_metrics_hold_the_replicas_and_say_why() -> None:
    # Long idle, two replicas running: with metrics this would scale to zero.
    plan = decide(observe(service(), None, replicas=2), now=NOW + timedelta(hours=1))
    assert plan.replicas == 2 and plan.events == ()
    available = condition(plan, "MetricsAvailable")
    assert available["status"] == "False" and available["reason"] == "MetricsUnavailable"
    assert available["message"] == "unreachable"
    assert condition(plan, "Ready")["reason"] == "MetricsUnavailable"


def test_idle_past_scale_to_zero_after_goes_to_zero() -> None:
    first = observe(service(), replicas=1)
    plan = decide(after(first, decide(first)), now=NOW + timedelta(minutes=5))
    assert plan.status["phase"] == "ScaledToZero" and plan.replicas == 0
    assert reasons(plan) == ["ScaledToZero"] and plan.scaled_to_zero


def test_a_recent_request_keeps_a_replica() -> None:
    first = observe(service(), replicas=1)
    later = NOW + timedelta(minutes=5)
    seen = replace(after(first, decide(first)), seen_request=later - timedelta(seconds=30))
    plan = decide(seen, now=later)
    assert plan.replicas == 1 and plan.status["lastRequestTime"] == "2026-11-22T12:04:30Z"


def test_a_wake_request_scales_up_once_and_the_cold_start_is_reported() -> None:
    woke = NOW - timedelta(seconds=1)
    waking = decide(observe(service(), wake_at=woke))
    assert waking.replicas == 1 and waking.status["phase"] == "Waking" and waking.woke
    assert condition(waking, "Ready")["status"] == "False"
    assert waking.wake_handled == woke and waking.waking_since == woke

    ready_at = woke + timedelta(seconds=12.5)
    seen = replace(observe(service(), replicas=1, wake_at=woke), first_ready=ready_at)
    later = decide(after(seen, waking), now=NOW + timedelta(seconds=15))
    assert later.status["phase"] == "Active" and not later.woke
    assert later.status["lastColdStartSeconds"] == 12.5
    assert reasons(later) == ["Woke"] and later.waking_since is None


def test_an_unservable_format_is_degraded_and_applies_nothing() -> None:
    plan = decide(observe(service(model={"uri": "pvc://models/clf", "format": "onnx"}), 1.0))
    assert not plan.apply and plan.status["phase"] == "Degraded"
    ready = condition(plan, "Ready")
    assert ready["reason"] == "UnsupportedModelFormat" and "spec.image" in ready["message"]


def test_a_spent_budget_with_suspend_scales_to_zero_and_says_why() -> None:
    policy = CostPolicy.from_body(
        {
            "metadata": {"name": "web-budget"},
            "spec": {"namespaceSelector": {}, "budget": {"monthly": 1, "onExceeded": "Suspend"}},
            "status": {
                "conditions": [
                    {
                        "type": "BudgetExceeded",
                        "status": "True",
                        "reason": "BudgetSpent",
                        "message": "spent 1.20 of 1 this month (120%)",
                        "lastTransitionTime": "2026-11-22T11:00:00Z",
                    }
                ]
            },
        }
    )
    plan = decide(observe(service(), 50.0, replicas=2), policy)
    assert plan.replicas == 0 and plan.status["replicas"] == 0
    ready = condition(plan, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "BudgetExceeded"
    assert "web-budget" in ready["message"]


def test_the_policys_scale_to_zero_after_caps_the_services() -> None:
    policy = idle_policy(scaleToZero={"after": "30s"})
    first = observe(service(), replicas=1)  # scaleToZeroAfter 5m
    later = NOW + timedelta(seconds=30)
    plan = decide(after(first, decide(first, policy)), policy, later)
    assert plan.status["phase"] == "ScaledToZero" and plan.replicas == 0
    assert plan.status["scaleToZeroAfter"] == {
        "seconds": 30.0,
        "source": "CostPolicy",
        "message": "scaleToZeroAfter: 30s (CostPolicy team-web scaleToZero.after caps"
        " spec.scaling.scaleToZeroAfter 300s)",
    }
    ((_, reason, message),) = plan.events
    assert reason == "ScaledToZero" and "idle for 30s" in message
    # Without the policy the same 30 s keep the replica.
    kept = decide(after(first, decide(first)), now=later)
    assert kept.replicas == 1 and kept.status["scaleToZeroAfter"]["source"] == "Spec"


def test_a_policy_longer_than_the_service_changes_nothing() -> None:
    plan = decide(observe(service()), idle_policy(scaleToZero={"after": "1h"}))
    assert plan.status["scaleToZeroAfter"]["seconds"] == 300.0
    assert plan.status["scaleToZeroAfter"]["source"] == "Spec"


def test_where_the_spot_policy_comes_from() -> None:
    policy = idle_policy(spot={"default": "Never"})
    plan = decide(observe(service(), 20.0), policy)
    assert plan.spot == "Never"
    assert plan.status["spot"] == {
        "policy": "Never",
        "source": "CostPolicy",
        "message": "spot: Never (from CostPolicy team-web spot.default)",
    }
    # The service's own wins.
    mine = decide(observe(service(capacity={"spot": "Require"}), 20.0), policy)
    assert (mine.spot, mine.status["spot"]["source"]) == ("Require", "Spec")
    # No policy: Prefer, the operator's default.
    default = decide(observe(service(), 20.0))
    assert (default.spot, default.status["spot"]["source"]) == ("Prefer", "Default")


def test_replicas_held_back_by_a_missing_claim_say_which_claim() -> None:
    svc = service(replicas={"min": 1, "max": 2})
    unready = observe(svc, 0.0, replicas=1, ready=0, missing_claims=("weights",))
    later = decide(unready, now=NOW + timedelta(minutes=10))
    ready = condition(later, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "VolumeClaimMissing"
    assert ready["message"] == (
        f"replicas cannot be scheduled: PersistentVolumeClaim "
        f"{svc.metadata.namespace}/weights does not exist"
    )
    other = decide(replace(unready, missing_claims=(), held_back="gated"))
    assert condition(other, "Ready")["message"] == "replicas cannot be scheduled: gated"
