"""One pass of the CostPolicy controller: governed namespaces, spending this month from the
jobs' accrued cost, alert thresholds once each, BudgetExceeded; and how the TrainingJob
decision obeys it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sparsam.api.costpolicy import CostPolicy
from sparsam.api.trainingjob import TrainingJob
from sparsam.controllers.costpolicy import CostPolicyController
from sparsam.decisions.cost import month
from sparsam.decisions.effective_policy import policy_stop
from sparsam.decisions.training import Worker, decide_workers

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NAMESPACES = {"ml": {"team": "ml"}, "web": {"team": "web"}}


def policy(status: dict[str, Any] | None = None, **budget: Any) -> CostPolicy:
    spec: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"team": "ml"}}}
    if budget:
        spec["budget"] = budget
    return CostPolicy.from_body(
        {"metadata": {"name": "ml", "generation": 1}, "spec": spec, "status": status or {}}
    )


def job(uid: str, namespace: str, accrued: float) -> dict[str, Any]:
    return {
        "metadata": {"name": uid, "namespace": namespace, "uid": uid},
        "status": {"cost": {"accrued": accrued}},
    }


def condition(status: dict[str, Any], type_: str) -> tuple[str, str]:
    (found,) = [c for c in status["conditions"] if c["type"] == type_]
    return found["status"], found["reason"]


def test_month() -> None:
    assert month(NOW) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert month(datetime(2026, 12, 31, 23, tzinfo=UTC))[1] == datetime(2027, 1, 1, tzinfo=UTC)


def test_spending_counts_growth_of_governed_jobs_only_and_alerts_once() -> None:
    ctl = CostPolicyController()
    p = policy(monthly=10, alertAt=[0.5, 1.0], onExceeded="BlockNew")
    first = ctl.reconcile(p, [p], NAMESPACES, [job("a", "ml", 100.0), job("w", "web", 5)], NOW)
    # First sight is a baseline: a job's past is not charged to this month.
    assert first.status["spent"] == 0.0
    assert first.status["matchedNamespaces"] == ["ml"]
    assert first.status["period"] == {
        "start": "2026-11-01T00:00:00Z",
        "end": "2026-12-01T00:00:00Z",
    }
    assert condition(first.status, "BudgetExceeded") == ("False", "WithinBudget")
    assert first.status["blockedNamespaces"] == []

    p = policy(first.status, monthly=10, alertAt=[0.5, 1.0], onExceeded="BlockNew")
    later = NOW + timedelta(minutes=1)
    second = ctl.reconcile(p, [p], NAMESPACES, [job("a", "ml", 106.0), job("w", "web", 50)], later)
    assert second.status["spent"] == 6.0
    assert condition(second.status, "BudgetAlert") == ("True", "ThresholdCrossed")
    assert [e.reason for e in second.events] == ["BudgetAlert"]

    p = policy(second.status, monthly=10, alertAt=[0.5, 1.0], onExceeded="BlockNew")
    third = ctl.reconcile(p, [p], NAMESPACES, [job("a", "ml", 111.0)], later)
    assert third.status["spent"] == 11.0
    assert condition(third.status, "BudgetExceeded") == ("True", "BudgetSpent")
    assert third.status["blockedNamespaces"] == ["ml"]
    assert [e.reason for e in third.events] == ["BudgetAlert", "BudgetExceeded"]
    p = policy(third.status, monthly=10, alertAt=[0.5, 1.0], onExceeded="BlockNew")
    fourth = ctl.reconcile(p, [p], NAMESPACES, [job("a", "ml", 111.0)], later)
    assert fourth.events == ()


@pytest.mark.parametrize(
    ("action", "blocked"),
    [("Alert", []), ("BlockNew", ["ml"]), ("Suspend", ["ml"])],
)
def test_a_spent_budget_blocks_new_workloads_unless_it_only_alerts(
    action: str, blocked: list[str]
) -> None:
    ctl = CostPolicyController()
    p = policy(monthly=1, onExceeded=action)
    first = ctl.reconcile(p, [p], NAMESPACES, [job("a", "ml", 0.0)], NOW)
    p = policy(first.status, monthly=1, onExceeded=action)
    # An InferenceService spends like a job: its status.cost.accrued grew by 2.
    second = ctl.reconcile(p, [p], NAMESPACES, [job("a", "ml", 2.0)], NOW)
    assert condition(second.status, "BudgetExceeded")[0] == "True"
    assert second.status["blockedNamespaces"] == blocked


def test_a_new_month_starts_from_zero() -> None:
    ctl = CostPolicyController()
    old = {"spent": 9.0, "period": {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}}
    result = ctl.reconcile(policy(old, monthly=10), [], NAMESPACES, [], NOW)
    assert result.status["spent"] == 0.0


def exceeded(action: str) -> CostPolicy:
    return CostPolicy.from_body(
        {
            "metadata": {"name": "ml"},
            "spec": {"namespaceSelector": {}, "budget": {"monthly": 10, "onExceeded": action}},
            "status": {
                "conditions": [
                    {
                        "type": "BudgetExceeded",
                        "status": "True",
                        "reason": "BudgetSpent",
                        "message": "spent 11.00 of 10 this month (110%)",
                        "lastTransitionTime": "2026-11-22T11:00:00Z",
                    }
                ]
            },
        }
    )


def training(started: bool) -> TrainingJob:
    status = {"startTime": "2026-11-22T10:00:00Z", "phase": "Running"} if started else {}
    return TrainingJob.from_body(
        {
            "metadata": {"name": "tj", "namespace": "ml", "uid": "u"},
            "spec": {"image": "t:1", "workers": {"min": 1, "max": 1}},
            "status": status,
        }
    )


@pytest.mark.parametrize(
    ("action", "started", "phase", "create"),
    [
        ("Alert", False, "Pending", (0,)),
        ("BlockNew", False, "Pending", ()),
        ("BlockNew", True, "Running", ()),
        ("Suspend", True, "Suspended", ()),
    ],
    ids=["alert-only", "blocknew-holds-a-new-job", "blocknew-lets-running-work-go-on", "suspend"],
)
def test_jobs_obey_their_policys_spent_budget(
    action: str, started: bool, phase: str, create: tuple[int, ...]
) -> None:
    running = [Worker(0, "tj-worker-0", "Running")] if started else []
    decision = decide_workers(training(started), running, NOW, policy_stop(exceeded(action)))
    assert decision.phase == phase
    assert decision.create == create
    if action != "Alert" and phase != "Running":
        assert decision.ready[1] == "BudgetExceeded"
        assert "CostPolicy ml: spent 11.00 of 10" in decision.ready[2]
