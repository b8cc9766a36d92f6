"""An InferenceService pass's one decision: what the pass observed in, the plan it carries out.

    plan = decide_serving(observed, policy, now)     # pure: no I/O, no clock

The controller observes (the service, its wake annotation, its Deployments' replicas, its
traffic from Prometheus, when its first replica became ready, the cost accrued up to now, what
it remembers between passes), calls this, and carries the plan out: the Deployments of
`on_demand` and `by_policy` replicas (`spot_split`) and the Service applied, the scaler's
memory and the wake bookkeeping kept, `status` and `events` reported.

It composes `scaling.decide_scaling` (the replicas) with the effective policy's say: its spot
policy, its cap on scaleToZero.after, and a spent budget that suspends (no replicas, whatever
the traffic).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

from sparsam.api.common import SpotPolicy
from sparsam.api.conditions import READY, Status, parse_rfc3339, rfc3339, set_condition
from sparsam.api.inferenceservice import InferenceService
from sparsam.decisions.cost import Accrual, cost_status_to_write
from sparsam.decisions.effective_policy import (
    EffectivePolicy,
    choose_scale_to_zero_after,
    choose_spot,
)
from sparsam.decisions.scaling import (
    REASON_METRICS_UNAVAILABLE,
    MetricSample,
    ScalerMemory,
    ScalingDecision,
    ScalingInput,
    ScalingSettings,
    decide_scaling,
    spot_split,
)

#: Condition type: whether the scaling metric could be read (False: replicas are held).
METRICS_AVAILABLE: Final = "MetricsAvailable"

#: An Event for the service: (type, reason, message).
EventTuple = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ServingObserved:
    """What one pass of an InferenceService observed, and what the controller remembers."""

    svc: InferenceService
    #: The model formats the default server serves (a service of another needs spec.image).
    served_formats: Collection[str]
    #: status.url: the activator's route, or the Service's in-cluster address.
    url: str
    #: Replicas its Deployments ask for, and how many are ready.
    replicas: int = 0
    ready: int = 0
    #: The scaling metric now, and the last request time Prometheus knows.
    sample: MetricSample = field(default_factory=lambda: MetricSample(None, "no data"))
    seen_request: datetime | None = None
    #: The wake-requested-at annotation.
    wake_at: datetime | None = None
    #: When the earliest ready replica became ready (None: none is).
    first_ready: datetime | None = None
    #: Why a replica waits on something no node gives it (`decisions.waiting`): the claims
    #: the scheduler says do not exist, or else its message; empty while none does.
    missing_claims: tuple[str, ...] = ()
    held_back: str | None = None
    #: The cost accrued up to now, and when this operator last wrote status.cost.
    accrual: Accrual | None = None
    cost_written: datetime | None = None
    #: Remembered between passes: the scaler's memory, the wake annotation last acted on,
    #: and when the current wake from zero began.
    scaler: ScalerMemory = field(default_factory=ScalerMemory)
    wake_handled: datetime | None = None
    waking_since: datetime | None = None
    settings: ScalingSettings = field(default_factory=ScalingSettings)


@dataclass(frozen=True, slots=True)
class ServingPlan:
    """What a pass does: apply the Deployments (and the Service), then report."""

    status: dict[str, Any]
    events: tuple[EventTuple, ...] = ()
    #: False: nothing to apply (an unservable format).
    apply: bool = True
    #: The replicas, and their split between the on-demand base and the spot policy.
    replicas: int = 0
    on_demand: int = 0
    by_policy: int = 0
    spot: SpotPolicy = "Prefer"
    allowed_gpu_types: tuple[str, ...] | None = None
    #: What the controller remembers next.
    scaler: ScalerMemory = field(default_factory=ScalerMemory)
    wake_handled: datetime | None = None
    waking_since: datetime | None = None
    cost_written: bool = False
    #: For the counters: scaled to zero, or woke from zero on a wake request.
    scaled_to_zero: bool = False
    woke: bool = False


def wake_pending(wake_at: datetime | None, handled: datetime | None) -> bool:
    """Whether `wake_at` (the annotation) is a wake request not acted on yet."""
    return wake_at is not None and (handled is None or wake_at > handled)


def decide_serving(
    observed: ServingObserved, policy: EffectivePolicy, now: datetime
) -> ServingPlan:
    """The plan for one pass of `observed.svc` under its effective `policy` at `now`."""
    svc = observed.svc
    spec = svc.spec
    if spec.model.format not in observed.served_formats and spec.image is None:
        message = (
            f"spec.model.format {spec.model.format} is not served by the default server"
            f" (it serves {', '.join(sorted(observed.served_formats))}); set spec.image to a"
            " server for it"
        )
        return ServingPlan(
            _unservable(svc, now, message),
            apply=False,
            scaler=observed.scaler,
            wake_handled=observed.wake_handled,
            waking_since=observed.waking_since,
        )
    current, ready, sample = observed.replicas, observed.ready, observed.sample
    wake = wake_pending(observed.wake_at, observed.wake_handled)
    wake_handled, waking_since = observed.wake_handled, observed.waking_since
    if wake and observed.wake_at is not None:
        wake_handled = observed.wake_at
        if current == 0 and waking_since is None:
            waking_since = observed.wake_at
    stop = policy.budget_stop
    spot = choose_spot(spec.capacity.spot, policy)
    keep = choose_scale_to_zero_after(spec.scaling.scale_to_zero_after, policy)
    spec = replace(spec, scaling=replace(spec.scaling, scale_to_zero_after=keep.after))
    suspended = stop is not None and stop.action == "Suspend"
    if suspended:
        # The namespace's budget is spent: no replicas, whatever the traffic.
        spec = replace(spec, replicas=replace(spec.replicas, min=0, max=0))
    last_request = _latest(parse_rfc3339(svc.status.last_request_time), observed.seen_request)
    decision = decide_scaling(
        ScalingInput(
            spec=spec,
            replicas=current,
            ready_replicas=ready,
            sample=sample,
            last_request_time=last_request,
            wake_requested=wake,
            memory=observed.scaler,
            settings=observed.settings,
        ),
        now,
    )
    if suspended and stop is not None:
        decision = replace(
            decision, ready_status="False", reason="BudgetExceeded", message=stop.message
        )
    elif decision.ready_status == "False" and (observed.missing_claims or observed.held_back):
        # Not ready, and no node will change that: say what will.
        reason, message = _held_back(svc, observed)
        decision = replace(decision, reason=reason, message=message)
    on_demand, by_policy = spot_split(decision.replicas, spec.capacity.on_demand_base, spot.policy)

    events: list[EventTuple] = []
    if decision.replicas != current:
        events.append(_scaled(svc, current, decision, sample, keep.after))
    status = _status(svc, observed.url, decision, ready, last_request, sample, now)
    status["spot"] = spot.to_raw()
    status["scaleToZeroAfter"] = keep.to_raw()
    if waking_since is not None and ready > 0:
        seconds = max(0.0, ((observed.first_ready or now) - waking_since).total_seconds())
        status["lastColdStartSeconds"] = round(seconds, 3)
        message = f"first replica ready {seconds:.1f}s after the first held request"
        events.append(("Normal", "Woke", message))
        waking_since = None
    elif decision.replicas == 0:
        waking_since = None
    cost = cost_status_to_write(
        observed.accrual,
        svc.status.cost,
        observed.cost_written,
        now,
        force=decision.phase != svc.status.phase,
    )
    if cost is not None:
        status["cost"] = cost
    return ServingPlan(
        status,
        tuple(events),
        replicas=decision.replicas,
        on_demand=on_demand,
        by_policy=by_policy,
        spot=spot.policy,
        allowed_gpu_types=policy.allowed_gpu_types,
        scaler=decision.memory,
        wake_handled=wake_handled,
        waking_since=waking_since,
        cost_written=cost is not None,
        scaled_to_zero=decision.replicas != current and decision.replicas == 0,
        woke=decision.replicas != current and decision.replicas != 0 and current == 0 and wake,
    )


def _status(
    svc: InferenceService,
    url: str,
    decision: ScalingDecision,
    ready: int,
    last_request: datetime | None,
    sample: MetricSample,
    now: datetime,
) -> dict[str, Any]:
    generation = svc.metadata.generation
    conditions = set_condition(
        svc.status.conditions,
        READY,
        decision.ready_status,
        decision.reason,
        decision.message,
        now,
        generation,
    )
    available: tuple[Status, str, str] = (
        ("True", "MetricsAvailable", f"{svc.spec.scaling.metric} = {sample.value:g}")
        if decision.metrics_available and sample.value is not None
        else ("False", REASON_METRICS_UNAVAILABLE, sample.reason or "no data")
    )
    # The value changes every pass; only a change of status is worth a write.
    old = next((x for x in conditions if x.type == METRICS_AVAILABLE), None)
    if old is None or old.status != available[0]:
        conditions = set_condition(conditions, METRICS_AVAILABLE, *available, now, generation)
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": decision.phase,
        "replicas": decision.replicas,
        "readyReplicas": ready,
        "url": url,
        "conditions": [cond.to_raw() for cond in conditions],
    }
    if last_request is not None:
        status["lastRequestTime"] = rfc3339(last_request)
    return status


def _held_back(svc: InferenceService, observed: ServingObserved) -> tuple[str, str]:
    """Ready's reason and message for replicas the scheduler holds back for a reason of their
    own: a PersistentVolumeClaim that does not exist, named; else the scheduler's words."""
    if observed.missing_claims:
        names = ", ".join(f"{svc.metadata.namespace}/{n}" for n in observed.missing_claims)
        noun = "PersistentVolumeClaim" if len(observed.missing_claims) == 1 else "claims"
        verb = "does" if len(observed.missing_claims) == 1 else "do"
        message = f"replicas cannot be scheduled: {noun} {names} {verb} not exist"
        return "VolumeClaimMissing", message
    return "Unschedulable", f"replicas cannot be scheduled: {observed.held_back}"


def _unservable(svc: InferenceService, now: datetime, message: str) -> dict[str, Any]:
    conditions = set_condition(
        svc.status.conditions,
        READY,
        "False",
        "UnsupportedModelFormat",
        message,
        now,
        svc.metadata.generation,
    )
    return {
        "observedGeneration": svc.metadata.generation,
        "phase": "Degraded",
        "conditions": [cond.to_raw() for cond in conditions],
    }


def _latest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return max(present) if present else None


def _scaled(
    svc: InferenceService,
    before: int,
    decision: ScalingDecision,
    sample: MetricSample,
    keep_alive: timedelta,
) -> EventTuple:
    metric = svc.spec.scaling.metric
    load = "unavailable" if sample.value is None else f"{sample.value:g}"
    if decision.replicas == 0:
        idle = f"{before} -> 0 replicas: idle for {keep_alive.total_seconds():g}s"
        return ("Normal", "ScaledToZero", idle)
    reason = "ScaledUp" if decision.replicas > before else "ScaledDown"
    return (
        "Normal",
        reason,
        f"{before} -> {decision.replicas} replicas ({metric} {load}, target"
        f" {svc.spec.scaling.target:g} per replica)",
    )
