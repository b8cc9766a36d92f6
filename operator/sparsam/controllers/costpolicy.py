"""The CostPolicy controller's pass: which namespaces it governs, what they spent this month,
and the budget conditions that the workload controllers obey.

Spending is counted from the TrainingJobs and InferenceServices of the governed namespaces:
each pass adds what their `status.cost.accrued` grew by since the pass before (an object seen
for the first time is a baseline, not a charge, so an operator restart never charges an
object's whole past to this month). The month is the calendar month in UTC; `status.spent`
starts again from zero when it turns. The budget's `alertAt` thresholds post one Event each per
month (BudgetAlert); reaching the budget sets BudgetExceeded=True, which the workload
controllers act on (BlockNew: jobs that have not started wait; Suspend: running jobs are
suspended and services scaled to zero), and, with BlockNew or Suspend, lists the governed
namespaces in `status.blockedNamespaces`, where the chart's ValidatingAdmissionPolicy refuses
new TrainingJobs and InferenceServices."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sparsam import metrics
from sparsam.api.conditions import READY, Condition, rfc3339, set_condition
from sparsam.api.costpolicy import CostPolicy
from sparsam.controllers.results import Event, PassResult
from sparsam.decisions.cost import (
    BUDGET_ALERT,
    BUDGET_EXCEEDED,
    STATUS_DIGITS,
    budget_action,
    month,
)
from sparsam.decisions.policy import governed_namespaces
from sparsam.kube.observe import Body


@dataclass
class CostPolicyMemory:
    #: Job uid -> its status.cost.accrued at the last pass.
    accrued: dict[str, float] = field(default_factory=dict)
    #: Policy name -> (period start, thresholds already alerted in it).
    alerted: dict[str, tuple[datetime, frozenset[float]]] = field(default_factory=dict)


class CostPolicyController:
    def __init__(self) -> None:
        self.memory = CostPolicyMemory()
        self._lock = threading.Lock()

    def reconcile(
        self,
        policy: CostPolicy,
        policies: Sequence[CostPolicy],
        namespaces: Mapping[str, Mapping[str, str]],
        spenders: Sequence[Body],
        now: datetime,
    ) -> PassResult:
        """One pass for `policy`; `policies` are all of the cluster's, `spenders` every
        TrainingJob and InferenceService (from the caches)."""
        with self._lock:
            return self._pass(policy, policies, namespaces, spenders, now)

    def forget(self, name: str) -> None:
        """The policy is gone: drop the alerts it sent in its period."""
        with self._lock:
            self.memory.alerted.pop(name, None)

    def _pass(
        self,
        policy: CostPolicy,
        policies: Sequence[CostPolicy],
        namespaces: Mapping[str, Mapping[str, str]],
        spenders: Sequence[Body],
        now: datetime,
    ) -> PassResult:
        governed = governed_namespaces(policy, policies, namespaces)
        start, end = month(now)
        status = policy.status
        same_period = status.period is not None and status.period.start == rfc3339(start)
        recorded = (status.spent or 0.0) if same_period else 0.0
        spent = recorded + self._growth(spenders, set(governed))
        spent = round(spent, STATUS_DIGITS)

        conditions = set_condition(
            status.conditions,
            READY,
            "True",
            "InForce",
            f"the effective policy of {len(governed)} namespace(s)",
            now,
            policy.metadata.generation,
        )
        events: list[Event] = []
        budget = policy.spec.budget
        metrics.POLICY_SPENT.labels(policy.metadata.name).set(spent)
        if budget is not None:
            metrics.POLICY_BUDGET.labels(policy.metadata.name).set(budget.monthly)
            conditions = self._budget(policy, recorded, spent, start, now, conditions, events)
        out: dict[str, Any] = {
            "observedGeneration": policy.metadata.generation,
            "spent": spent,
            "period": {"start": rfc3339(start), "end": rfc3339(end)},
            "matchedNamespaces": list(governed),
            "blockedNamespaces": list(governed) if _blocks_new(policy, conditions) else [],
            "conditions": [cond.to_raw() for cond in conditions],
        }
        return PassResult(out, tuple(events))

    def _growth(self, spenders: Sequence[Body], governed: set[str]) -> float:
        """What the governed namespaces' jobs and services accrued since the last pass."""
        grown = 0.0
        for job in spenders:
            meta = job.get("metadata") or {}
            uid = str(meta.get("uid", ""))
            accrued = float(((job.get("status") or {}).get("cost") or {}).get("accrued") or 0.0)
            before = self.memory.accrued.get(uid)
            self.memory.accrued[uid] = accrued
            if before is not None and meta.get("namespace") in governed:
                grown += max(0.0, accrued - before)
        return grown

    def _budget(
        self,
        policy: CostPolicy,
        recorded: float,
        spent: float,
        period: datetime,
        now: datetime,
        conditions: tuple[Condition, ...],
        events: list[Event],
    ) -> tuple[Condition, ...]:
        budget = policy.spec.budget
        if budget is None:
            return conditions
        name = policy.metadata.name
        remembered = self.memory.alerted.get(name)
        if remembered is not None and remembered[0] == period:
            alerted = remembered[1]
        else:
            # A restarted operator: the thresholds that this month's recorded spending had
            # crossed were alerted before the restart.
            alerted = frozenset(t for t in budget.alert_at if recorded >= t * budget.monthly)
        decision = budget_action(
            spent, budget.monthly, budget.alert_at, budget.on_exceeded, alerted
        )
        self.memory.alerted[name] = (period, decision.alerted)
        share = f"spent {spent:.2f} of {budget.monthly:g} this month ({decision.fraction:.0%})"
        for threshold in decision.newly_crossed:
            events.append(
                Event("Warning", BUDGET_ALERT, f"{share}: crossed {threshold:.0%} of the budget")
            )
        alert_reached = any(decision.fraction >= t for t in budget.alert_at)
        generation = policy.metadata.generation
        conditions = set_condition(
            conditions,
            BUDGET_ALERT,
            "True" if alert_reached else "False",
            "ThresholdCrossed" if alert_reached else "BelowThresholds",
            share,
            now,
            generation,
        )
        if decision.action_due:
            message = f"{share}; onExceeded: {budget.on_exceeded}"
            if not _is_true(conditions, BUDGET_EXCEEDED):
                events.append(Event("Warning", BUDGET_EXCEEDED, message))
            return set_condition(
                conditions, BUDGET_EXCEEDED, "True", "BudgetSpent", message, now, generation
            )
        return set_condition(
            conditions, BUDGET_EXCEEDED, "False", "WithinBudget", share, now, generation
        )


def _blocks_new(policy: CostPolicy, conditions: Sequence[Condition]) -> bool:
    """Whether new workloads are refused: the budget is spent, and onExceeded stops them
    (BlockNew, and Suspend, which would stop them at once anyway)."""
    budget = policy.spec.budget
    return (
        budget is not None
        and budget.on_exceeded in ("BlockNew", "Suspend")
        and _is_true(conditions, BUDGET_EXCEEDED)
    )


def _is_true(conditions: Sequence[Condition], type_: str) -> bool:
    return any(c.type == type_ and c.status == "True" for c in conditions)
