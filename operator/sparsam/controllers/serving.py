"""The InferenceService controller's pass: sample traffic, decide replicas, apply, report.

Level-based like the other passes. Each pass reads the service's Deployments and replica pods
from the watch caches and its traffic from Prometheus (`providers.metrics`), calls
`decisions.scaling.decide_scaling`, applies the Deployments (the replicas split between the
on-demand base and the spot policy by `spot_split`) and the Service, and returns the status.

A pass runs every interval, and at once when the activator asks for a wake (it sets the
`sparsam.dev/wake-requested-at` annotation when it holds a request at zero replicas); the work
queue never runs two passes of one service at once (`handlers.passes`). They still hold the
service's lock (`KeyedLocks`), which `forget` takes too.

What it remembers between passes, per service uid: the scaler's memory (the scale-down window,
the last traffic seen), the wake request last handled, when the current wake began (for
`lastColdStartSeconds`), and the cost meter's totals. After a restart the scaler starts
without memory, which `decide_scaling` treats conservatively (no early scale-down).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from sparsam import metrics
from sparsam.api import constants as c
from sparsam.api.conditions import READY, Status, parse_rfc3339, rfc3339, set_condition
from sparsam.api.costpolicy import CostPolicy
from sparsam.api.inferenceservice import InferenceService
from sparsam.controllers.costing import CostMeter
from sparsam.controllers.locks import KeyedLocks
from sparsam.controllers.results import Event, PassResult
from sparsam.decisions.cost import PriceTable
from sparsam.decisions.effective_policy import (
    EffectivePolicy,
    SpotChoice,
    choose_scale_to_zero_after,
    choose_spot,
    resolve_policy,
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
from sparsam.kube.inferenceservice import (
    SERVED_FORMATS,
    ServerSettings,
    deployment_manifests,
    service_manifest,
)
from sparsam.kube.observe import Body
from sparsam.kube.pods import Placement
from sparsam.providers.metrics import MetricsSource, Query, ServingQueries

#: Condition type: whether the scaling metric could be read (False: replicas are held).
METRICS_AVAILABLE: Final = "MetricsAvailable"
NO_PROMETHEUS: Final = "no Prometheus configured (sparsam run --prometheus-url)"


class Actuator(Protocol):
    """`kube.serving.ServingActuator`, or a fake in unit tests."""

    def apply(self, manifest: dict[str, Any]) -> None: ...
    def delete_deployment(self, namespace: str, name: str, uid: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """Operator-wide settings of the pass."""

    #: The activator's base URL; status.url is `<activator_url>/<namespace>/<name>`. None:
    #: no activator, status.url is the Service's in-cluster address (no wake from zero).
    activator_url: str | None = None
    queries: ServingQueries = field(default_factory=ServingQueries)
    server: ServerSettings = field(default_factory=ServerSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    placement: Placement = field(default_factory=Placement)


@dataclass
class ServingMemory:
    scaler: dict[str, ScalerMemory] = field(default_factory=dict)
    #: uid -> the wake-requested-at value last acted on.
    wake_handled: dict[str, datetime] = field(default_factory=dict)
    #: uid -> when the current wake from zero began (the first held request).
    waking_since: dict[str, datetime] = field(default_factory=dict)


class ServingController:
    def __init__(
        self,
        actuator: Actuator,
        metrics: MetricsSource | None,
        config: ServingConfig | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self._actuator = actuator
        self._metrics = metrics
        self.config = config or ServingConfig()
        self._cost = CostMeter(c.INFERENCE_SERVICE.kind, prices)
        self.memory = ServingMemory()
        self._locks = KeyedLocks()

    def wake_pending(self, uid: str, wake_at: datetime | None) -> bool:
        """Whether `wake_at` (the annotation) is a wake request for the service `uid` not acted
        on yet."""
        handled = self.memory.wake_handled.get(uid)
        return wake_at is not None and (handled is None or wake_at > handled)

    def reconcile(
        self,
        svc: InferenceService,
        wake_at: datetime | None,
        deployments: Sequence[Body],
        pods: Sequence[Body],
        nodes: Mapping[str, Body],
        pools: Mapping[str, Body],
        policy: CostPolicy | None,
        now: datetime,
    ) -> PassResult:
        """One pass for `svc`, given its wake annotation, its Deployments and replica pods,
        every node and GPUNodePool (for prices) from the caches, and its namespace's
        effective CostPolicy (read once, here, into the `EffectivePolicy` the rest of the pass
        takes)."""
        # Prometheus is asked outside any lock: a slow or unreachable one delays this
        # service's pass only. Passes of one service never interleave; of two, they may.
        traffic = self._traffic(svc)
        effective = resolve_policy(policy)
        with self._locks.of(svc.metadata.uid):
            return self._pass(
                svc, wake_at, traffic, deployments, pods, nodes, pools, effective, now
            )

    def _traffic(self, svc: InferenceService) -> tuple[MetricSample, datetime | None]:
        """The scaling metric now, and the last request time Prometheus knows."""
        queries = self.config.queries
        sample = self._sample(svc, queries.for_metric(svc.spec.scaling.metric))
        return sample, self._timestamp(svc, queries.last_request)

    def _pass(
        self,
        svc: InferenceService,
        wake_at: datetime | None,
        traffic: tuple[MetricSample, datetime | None],
        deployments: Sequence[Body],
        pods: Sequence[Body],
        nodes: Mapping[str, Body],
        pools: Mapping[str, Body],
        policy: EffectivePolicy,
        now: datetime,
    ) -> PassResult:
        uid, spec = svc.metadata.uid, svc.spec
        if spec.model.format not in SERVED_FORMATS and spec.image is None:
            return PassResult(
                self._unservable(
                    svc,
                    now,
                    f"spec.model.format {spec.model.format} is not served by the default server"
                    f" (it serves {', '.join(sorted(SERVED_FORMATS))}); set spec.image to a"
                    " server for it",
                )
            )
        current = sum(_replicas(d) for d in deployments)
        ready = sum(_ready(d) for d in deployments)
        wake = self.wake_pending(svc.metadata.uid, wake_at)
        if wake and wake_at is not None:
            self.memory.wake_handled[uid] = wake_at
            if current == 0:
                self.memory.waking_since.setdefault(uid, wake_at)
        stop = policy.budget_stop
        spot = choose_spot(spec.capacity.spot, policy)
        keep = choose_scale_to_zero_after(spec.scaling.scale_to_zero_after, policy)
        spec = replace(spec, scaling=replace(spec.scaling, scale_to_zero_after=keep.after))
        suspended = stop is not None and stop.action == "Suspend"
        if suspended:
            # The namespace's budget is spent: no replicas, whatever the traffic.
            spec = replace(spec, replicas=replace(spec.replicas, min=0, max=0))
        sample, seen_request = traffic
        last_request = _latest(parse_rfc3339(svc.status.last_request_time), seen_request)
        decision = decide_scaling(
            ScalingInput(
                spec=spec,
                replicas=current,
                ready_replicas=ready,
                sample=sample,
                last_request_time=last_request,
                wake_requested=wake,
                memory=self.memory.scaler.get(uid, ScalerMemory()),
                settings=self.config.scaling,
            ),
            now,
        )
        self.memory.scaler[uid] = decision.memory
        if suspended and stop is not None:
            decision = replace(
                decision, ready_status="False", reason="BudgetExceeded", message=stop.message
            )
        self._apply(svc, decision.replicas, deployments, policy, spot)

        events: list[Event] = []
        labels = (svc.metadata.namespace, svc.metadata.name)
        metrics.REPLICAS.labels(*labels).set(decision.replicas)
        metrics.READY_REPLICAS.labels(*labels).set(ready)
        if decision.replicas != current:
            events.append(_scaled(svc, current, decision, sample, keep.after))
            if decision.replicas == 0:
                metrics.SCALED_TO_ZERO.labels(*labels).inc()
            elif current == 0 and wake:
                metrics.WAKES.labels(*labels).inc()
        status = self._status(svc, decision, ready, last_request, sample, now)
        status["spot"] = spot.to_raw()
        status["scaleToZeroAfter"] = keep.to_raw()
        woke = self.memory.waking_since.get(uid)
        if woke is not None and ready > 0:
            seconds = max(0.0, ((_first_ready(pods) or now) - woke).total_seconds())
            status["lastColdStartSeconds"] = round(seconds, 3)
            events.append(
                Event(
                    "Normal",
                    "Woke",
                    f"first replica ready {seconds:.1f}s after the first held request",
                )
            )
            del self.memory.waking_since[uid]
        elif decision.replicas == 0:
            self.memory.waking_since.pop(uid, None)

        accrual = self._cost.accrue(
            svc.metadata, svc.status.cost, pods, spec.resources.gpus, nodes, pools, now
        )
        cost = self._cost.status(
            uid, svc.status.cost, accrual, now, force=decision.phase != svc.status.phase
        )
        if cost is not None:
            status["cost"] = cost
        return PassResult(status, tuple(events))

    def _sample(self, svc: InferenceService, query: Query) -> MetricSample:
        if self._metrics is None:
            return MetricSample(None, NO_PROMETHEUS)
        return self._metrics.sample(query.render(svc.metadata.namespace, svc.metadata.name))

    def _timestamp(self, svc: InferenceService, query: Query) -> datetime | None:
        value = self._sample(svc, query).value
        if value is None or value <= 0:
            return None
        return datetime.fromtimestamp(value, UTC)

    def _apply(
        self,
        svc: InferenceService,
        replicas: int,
        deployments: Sequence[Body],
        policy: EffectivePolicy,
        spot: SpotChoice,
    ) -> None:
        """The Deployments and the Service as they should be; unchanged ones are not sent."""
        on_demand_base = svc.spec.capacity.on_demand_base
        on_demand, by_policy = spot_split(replicas, on_demand_base, spot.policy)
        placement = replace(self.config.placement, allowed_gpu_types=policy.allowed_gpu_types)
        wanted = deployment_manifests(
            svc, on_demand, by_policy, placement, self.config.server, spot.policy
        )
        existing = {str((d.get("metadata") or {}).get("name")): d for d in deployments}
        if not existing:
            self._actuator.apply(service_manifest(svc))
        for manifest in wanted:
            have = existing.pop(manifest["metadata"]["name"], None)
            if have is None or _differs(have, manifest):
                self._actuator.apply(manifest)
        for name, stale in existing.items():  # e.g. the on-demand track after spot: Never
            meta = stale.get("metadata") or {}
            self._actuator.delete_deployment(svc.metadata.namespace, name, str(meta.get("uid")))

    def _status(
        self,
        svc: InferenceService,
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
            "url": self.url(svc),
            "conditions": [cond.to_raw() for cond in conditions],
        }
        if last_request is not None:
            status["lastRequestTime"] = rfc3339(last_request)
        return status

    def _unservable(self, svc: InferenceService, now: datetime, message: str) -> dict[str, Any]:
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

    def url(self, svc: InferenceService) -> str:
        ns, name = svc.metadata.namespace, svc.metadata.name
        if self.config.activator_url is None:
            return f"http://{name}.{ns}.svc.cluster.local"
        return f"{self.config.activator_url.rstrip('/')}/{ns}/{name}"

    def forget(self, uid: str, namespace: str, name: str) -> None:
        """The service is gone: drop what was remembered about it, and its gauges."""
        metrics.remove(metrics.REPLICAS, namespace, name)
        metrics.remove(metrics.READY_REPLICAS, namespace, name)
        with self._locks.of(uid):
            self.memory.scaler.pop(uid, None)
            self.memory.wake_handled.pop(uid, None)
            self.memory.waking_since.pop(uid, None)
            self._cost.forget(uid)
        self._locks.drop(uid)


def _replicas(deployment: Body) -> int:
    return int((deployment.get("spec") or {}).get("replicas") or 0)


def _ready(deployment: Body) -> int:
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def _latest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return max(present) if present else None


def _first_ready(pods: Sequence[Body]) -> datetime | None:
    """When the earliest of the ready replicas became ready."""
    found = (
        parse_rfc3339(cond.get("lastTransitionTime"))
        for pod in pods
        for cond in (pod.get("status") or {}).get("conditions") or ()
        if cond.get("type") == "Ready" and cond.get("status") == "True"
    )
    times = [t for t in found if t is not None]
    return min(times) if times else None


def _differs(have: Body, want: dict[str, Any]) -> bool:
    """Whether an existing Deployment differs from what we would apply: its replica count,
    or the digest of its pod template we last applied."""
    annotations = (have.get("metadata") or {}).get("annotations") or {}
    digest = want["metadata"]["annotations"][c.ANNOTATION_APPLIED]
    return bool(
        _replicas(have) != want["spec"]["replicas"]
        or annotations.get(c.ANNOTATION_APPLIED) != digest
    )


def _scaled(
    svc: InferenceService,
    before: int,
    decision: ScalingDecision,
    sample: MetricSample,
    keep_alive: timedelta,
) -> Event:
    metric = svc.spec.scaling.metric
    load = "unavailable" if sample.value is None else f"{sample.value:g}"
    if decision.replicas == 0:
        return Event(
            "Normal",
            "ScaledToZero",
            f"{before} -> 0 replicas: idle for {keep_alive.total_seconds():g}s",
        )
    reason = "ScaledUp" if decision.replicas > before else "ScaledDown"
    return Event(
        "Normal",
        reason,
        f"{before} -> {decision.replicas} replicas ({metric} {load}, target"
        f" {svc.spec.scaling.target:g} per replica)",
    )
