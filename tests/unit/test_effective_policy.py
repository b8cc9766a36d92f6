"""`decisions.effective_policy`: the rules of a namespace resolved from the one CostPolicy that
governs it, and the two rules that combine with a workload's own spec (spot, scale to zero)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sparsam.api.costpolicy import CostPolicy
from sparsam.api.trainingjob import TrainingJob
from sparsam.decisions.effective_policy import (
    NO_POLICY,
    EffectivePolicy,
    choose_scale_to_zero_after,
    choose_spot,
    compression_stop,
    governing_policy,
    resolve_policy,
)
from sparsam.decisions.training import BudgetStop

ML = {"kubernetes.io/metadata.name": "ml", "team": "ml"}


def policy(name: str, priority: int = 0, selector: Any = None, **spec: Any) -> CostPolicy:
    return CostPolicy.from_body(
        {
            "metadata": {"name": name, "uid": f"{name}-uid"},
            "spec": {"namespaceSelector": selector or {}, "priority": priority, **spec},
        }
    )


def exceeded(name: str, action: str) -> CostPolicy:
    body = {
        "metadata": {"name": name},
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
    return CostPolicy.from_body(body)


def job(**spec: Any) -> TrainingJob:
    return TrainingJob.from_body(
        {"metadata": {"name": "tj", "namespace": "ml"}, "spec": {"image": "t:1", **spec}}
    )


# --- resolution ---------------------------------------------------------------------------


def test_no_policy_is_the_operators_defaults() -> None:
    assert resolve_policy(None) == NO_POLICY == EffectivePolicy()
    assert governing_policy([], ML) == NO_POLICY
    assert not NO_POLICY.governed
    assert NO_POLICY.spot_default == "Prefer" and NO_POLICY.allowed_gpu_types is None
    assert NO_POLICY.scale_to_zero_after is None and NO_POLICY.budget_stop is None


def test_a_policy_without_the_optional_fields_sets_only_the_crd_defaults() -> None:
    found = resolve_policy(policy("bare"))
    assert found == EffectivePolicy(name="bare")
    assert found.governed


def test_a_policy_with_every_field_is_read_whole() -> None:
    found = resolve_policy(
        policy(
            "full",
            spot={"default": "Require", "onDemandFallbackAfter": "2m"},
            scaleToZero={"after": "90s"},
            compression={"required": True, "maxAccuracyDrop": 0.01},
            checkpoint={"maxLostWorkFraction": 0.05},
            allowedGPUTypes=["NVIDIA-L4", "NVIDIA-A10G"],
            budget={"monthly": 100, "onExceeded": "BlockNew"},
        )
    )
    assert found == EffectivePolicy(
        name="full",
        spot_default="Require",
        on_demand_fallback_after=timedelta(minutes=2),
        allowed_gpu_types=("NVIDIA-L4", "NVIDIA-A10G"),
        scale_to_zero_after=timedelta(seconds=90),
        compression_required=True,
        max_accuracy_drop=0.01,
        max_lost_work_fraction=0.05,
        budget_action="BlockNew",
        budget_stop=None,  # not spent
    )


@pytest.mark.parametrize(
    ("action", "stops"),
    [("Alert", False), ("BlockNew", True), ("Suspend", True)],
)
def test_a_spent_budget_stops_work_unless_it_only_alerts(action: str, stops: bool) -> None:
    found = resolve_policy(exceeded("ml-budget", action))
    if not stops:
        assert found.budget_stop is None
        return
    message = "CostPolicy ml-budget: spent 11.00 of 10 this month (110%)"
    assert found.budget_stop == BudgetStop(found.budget_stop.action, message)
    assert (found.budget_stop.action, found.budget_stop.reason) == (action, "BudgetExceeded")


def test_the_governing_policy_is_the_highest_priority_then_the_first_name_never_a_merge() -> None:
    wide = policy("00-default", 0, scaleToZero={"after": "1m"}, spot={"default": "Never"})
    team = policy("team-ml", 10, {"matchLabels": {"team": "ml"}}, spot={"default": "Require"})
    other = policy("team-web", 500, {"matchLabels": {"team": "web"}}, spot={"default": "Never"})
    found = governing_policy([wide, other, team], ML)
    assert found.name == "team-ml" and found.spot_default == "Require"
    # Nothing of the policy it wins over: no scale-to-zero bound, though 00-default has one.
    assert found.scale_to_zero_after is None
    # Equal priorities: the alphabetically first name, whatever the order of the list.
    a, b = policy("a-team", 10, spot={"default": "Never"}), policy("b-team", 10)
    assert governing_policy([b, team, a], ML).name == "a-team"
    assert governing_policy([a, team, b], ML).name == "a-team"
    # A namespace only the cluster-wide default selects.
    assert governing_policy([wide, team, other], {"team": "data"}).name == "00-default"


def test_compression_required_holds_a_job_without_compression() -> None:
    rules = resolve_policy(policy("team", compression={"required": True}))
    stop = compression_stop(job(), rules)
    assert stop is not None and stop.reason == "CompressionRequired"
    assert stop.action == "BlockNew" and "CostPolicy team requires" in stop.message
    assert compression_stop(job(compression={}), rules) is None
    assert compression_stop(job(), NO_POLICY) is None


# --- spot -----------------------------------------------------------------------------------


def test_an_unset_spot_takes_the_policys_default_and_says_so() -> None:
    team = resolve_policy(policy("team-ml", spot={"default": "Require"}))
    chosen = choose_spot(None, team)
    assert (chosen.policy, chosen.source) == ("Require", "CostPolicy")
    assert chosen.message == "spot: Require (from CostPolicy team-ml spot.default)"
    assert chosen.to_raw() == {
        "policy": "Require",
        "source": "CostPolicy",
        "message": "spot: Require (from CostPolicy team-ml spot.default)",
    }


def test_a_set_spot_wins_over_the_policy() -> None:
    team = resolve_policy(policy("team-ml", spot={"default": "Require"}))
    chosen = choose_spot("Never", team)
    assert (chosen.policy, chosen.source) == ("Never", "Spec")
    assert chosen.message == "spot: Never (from spec.capacity.spot)"


def test_an_unset_spot_without_a_policy_is_prefer() -> None:
    chosen = choose_spot(None, NO_POLICY)
    assert (chosen.policy, chosen.source) == ("Prefer", "Default")
    assert "no CostPolicy governs the namespace" in chosen.message
    # A policy that leaves spot.default out has the CRD's: Prefer, from the policy.
    assert choose_spot(None, resolve_policy(policy("bare"))).source == "CostPolicy"


# --- scale to zero --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("own", "bound", "after", "source"),
    [
        (timedelta(minutes=30), "10m", timedelta(minutes=10), "CostPolicy"),
        (timedelta(minutes=5), "10m", timedelta(minutes=5), "Spec"),
        (timedelta(minutes=10), "10m", timedelta(minutes=10), "Spec"),
        (timedelta(minutes=5), None, timedelta(minutes=5), "Spec"),
    ],
    ids=["capped", "shorter-own", "equal", "no-bound"],
)
def test_scale_to_zero_after_is_the_shorter_of_the_services_and_the_policys(
    own: timedelta, bound: str | None, after: timedelta, source: str
) -> None:
    spec = {"scaleToZero": {"after": bound}} if bound else {}
    chosen = choose_scale_to_zero_after(own, resolve_policy(policy("team-ml", **spec)))
    assert (chosen.after, chosen.source) == (after, source)
    assert chosen.to_raw()["seconds"] == after.total_seconds()


def test_a_capped_scale_to_zero_names_the_policy_and_both_values() -> None:
    rules = resolve_policy(policy("team-ml", scaleToZero={"after": "10s"}))
    chosen = choose_scale_to_zero_after(timedelta(minutes=5), rules)
    assert chosen.message == (
        "scaleToZeroAfter: 10s (CostPolicy team-ml scaleToZero.after caps"
        " spec.scaling.scaleToZeroAfter 300s)"
    )
    assert choose_scale_to_zero_after(timedelta(minutes=5), NO_POLICY).source == "Spec"
