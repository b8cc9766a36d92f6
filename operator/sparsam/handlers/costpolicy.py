"""Kopf handlers of the CostPolicy controller: one pass per policy on a timer, status out.

Thin: policies, namespaces and TrainingJobs come from the caches (`handlers.indexes`), the pass
is `controllers.costpolicy.CostPolicyController.reconcile`, its result goes to status (only what
changed) and Events. The policy itself is never changed: it lives in Git.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import kopf

from sparsam.api import constants as c
from sparsam.api.costpolicy import CostPolicy, CostPolicyStatus
from sparsam.controllers.costpolicy import CostPolicyController
from sparsam.handlers import indexes
from sparsam.handlers.reporting import read, report


def register(registry: kopf.OperatorRegistry, interval: float, now: Callable[[], datetime]) -> None:
    @kopf.timer(
        c.GROUP,
        c.VERSION,
        c.COST_POLICY.plural,
        interval=interval,
        id="spending",
        registry=registry,
    )
    def spending(body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
        moment = now()
        policy = read(body, patch, CostPolicy.from_body, CostPolicyStatus, moment)
        if policy is None:
            return
        controller: CostPolicyController = memo.costpolicy
        result = controller.reconcile(
            policy,
            indexes.policies(kwargs),
            indexes.namespaces(kwargs),
            indexes.spenders(kwargs),
            moment,
        )
        report(body, patch, result)
