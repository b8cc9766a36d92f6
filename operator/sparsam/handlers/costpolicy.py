"""Kopf handlers of the CostPolicy controller: policies' events in, one pass per policy from a
work queue (`handlers.passes`), status out.

Thin: policies and namespaces come from the caches (`handlers.indexes`), every TrainingJob's
and InferenceService's cost from the bodies their passes hold (`Passes.bodies`; a Kopf index
of them ran Kopf's indexing machinery on every event of every job), and the pass is
`controllers.costpolicy.CostPolicyController.reconcile`. The policy itself is never changed:
it lives in Git.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import kopf

from sparsam.api import constants as c
from sparsam.api.costpolicy import CostPolicy, CostPolicyStatus
from sparsam.controllers.costpolicy import CostPolicyController
from sparsam.controllers.results import PassResult
from sparsam.handlers import indexes
from sparsam.handlers.pacing import TokenBucket
from sparsam.handlers.passes import Key, Passes, Reconcile, WriteStatus

#: Every TrainingJob and InferenceService as last watched (their passes' `Passes.bodies`).
Spenders = Callable[[], Sequence[Mapping[str, Any]]]


def policy_pass(
    controller: CostPolicyController, caches: Mapping[str, Any], spenders: Spenders
) -> Reconcile[CostPolicy]:
    """A policy's pass, reading every policy and namespace from `caches` (`indexes.live`)."""

    def reconcile(policy: CostPolicy, _: kopf.Body, moment: datetime) -> PassResult:
        return controller.reconcile(
            policy,
            indexes.policies(caches),
            indexes.namespaces(caches),
            spenders(),
            moment,
        )

    return reconcile


def register(
    registry: kopf.OperatorRegistry,
    interval: float,
    now: Callable[[], datetime],
    active: Callable[[], bool],
    reports: TokenBucket,
    spenders: Spenders,
) -> None:
    passes = Passes(CostPolicy.from_body, CostPolicyStatus, interval, now, active, reports=reports)

    def start(memo: Any, caches: Mapping[str, Any]) -> tuple[Reconcile[CostPolicy], WriteStatus]:
        return policy_pass(memo.costpolicy, caches, spenders), memo.policy_status

    def forget(memo: Any, _: str, key: Key, __: kopf.Body) -> None:
        memo.costpolicy.forget(key[1])

    passes.register(registry, c.COST_POLICY, start, forget)
