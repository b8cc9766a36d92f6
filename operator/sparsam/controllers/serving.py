"""The InferenceService controller's pass: observe, decide once, carry the plan out.

Level-based like the other passes. Each pass reads the service's Deployments and replica pods
from the watch caches and its traffic from Prometheus (`providers.metrics`) into a
`ServingObserved`, calls `decisions.serving_plan.decide_serving` once, and carries the
`ServingPlan` out: the Deployments (the replicas split between the on-demand base and the spot
policy) and the Service applied, what to remember kept, the status returned. It decides
nothing itself.

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
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from sparsam import metrics
from sparsam.api import constants as c
from sparsam.api.conditions import parse_rfc3339
from sparsam.api.costpolicy import CostPolicy
from sparsam.api.inferenceservice import InferenceService
from sparsam.controllers.costing import CostMeter
from sparsam.controllers.locks import KeyedLocks
from sparsam.controllers.results import Event, PassResult
from sparsam.decisions.cost import PriceTable
from sparsam.decisions.effective_policy import resolve_policy
from sparsam.decisions.scaling import MetricSample, ScalerMemory, ScalingSettings
from sparsam.decisions.serving_plan import (
    ServingObserved,
    ServingPlan,
    decide_serving,
    wake_pending,
)
from sparsam.decisions.waiting import missing_claims, waits_for_capacity
from sparsam.kube.inferenceservice import (
    SERVED_FORMATS,
    ServerSettings,
    deployment_manifests,
    service_manifest,
)
from sparsam.kube.observe import Body, is_pending, scheduled
from sparsam.kube.pods import Placement
from sparsam.providers.metrics import MetricsSource, Query, ServingQueries

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
        return wake_pending(wake_at, self.memory.wake_handled.get(uid))

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
        effective CostPolicy (read once, here, into the `EffectivePolicy` the decision
        takes)."""
        # Prometheus is asked outside any lock: a slow or unreachable one delays this
        # service's pass only. Passes of one service never interleave; of two, they may.
        queries = self.config.queries
        sample = self._sample(svc, queries.for_metric(svc.spec.scaling.metric))
        seen_request = self._timestamp(svc, queries.last_request)
        effective = resolve_policy(policy)
        uid = svc.metadata.uid
        with self._locks.of(uid):
            accrual = self._cost.accrue(
                svc.metadata, svc.status.cost, pods, svc.spec.resources.gpus, nodes, pools, now
            )
            observed = ServingObserved(
                svc,
                SERVED_FORMATS,
                self.url(svc),
                replicas=sum(_replicas(d) for d in deployments),
                ready=sum(_ready(d) for d in deployments),
                sample=sample,
                seen_request=seen_request,
                wake_at=wake_at,
                first_ready=_first_ready(pods),
                missing_claims=_missing_claims(pods),
                held_back=_held_back(pods),
                accrual=accrual,
                cost_written=self._cost.written(uid),
                scaler=self.memory.scaler.get(uid, ScalerMemory()),
                wake_handled=self.memory.wake_handled.get(uid),
                waking_since=self.memory.waking_since.get(uid),
                settings=self.config.scaling,
            )
            plan = decide_serving(observed, effective, now)
            self._remember(uid, plan, now)
            return self._carry_out(svc, plan, deployments)

    def _remember(self, uid: str, plan: ServingPlan, now: datetime) -> None:
        self.memory.scaler[uid] = plan.scaler
        if plan.wake_handled is not None:
            self.memory.wake_handled[uid] = plan.wake_handled
        if plan.waking_since is not None:
            self.memory.waking_since[uid] = plan.waking_since
        else:
            self.memory.waking_since.pop(uid, None)
        if plan.cost_written:
            self._cost.wrote(uid, now)

    def _carry_out(
        self, svc: InferenceService, plan: ServingPlan, deployments: Sequence[Body]
    ) -> PassResult:
        events = tuple(Event(*e) for e in plan.events)
        if not plan.apply:
            return PassResult(plan.status, events)
        self._apply(svc, plan, deployments)
        labels = (svc.metadata.namespace, svc.metadata.name)
        metrics.REPLICAS.labels(*labels).set(plan.replicas)
        metrics.READY_REPLICAS.labels(*labels).set(plan.status["readyReplicas"])
        if plan.scaled_to_zero:
            metrics.SCALED_TO_ZERO.labels(*labels).inc()
        if plan.woke:
            metrics.WAKES.labels(*labels).inc()
        return PassResult(plan.status, events)

    def _sample(self, svc: InferenceService, query: Query) -> MetricSample:
        if self._metrics is None:
            return MetricSample(None, NO_PROMETHEUS)
        return self._metrics.sample(query.render(svc.metadata.namespace, svc.metadata.name))

    def _timestamp(self, svc: InferenceService, query: Query) -> datetime | None:
        value = self._sample(svc, query).value
        if value is None or value <= 0:
            return None
        return datetime.fromtimestamp(value, UTC)

    def _apply(self, svc: InferenceService, plan: ServingPlan, deployments: Sequence[Body]) -> None:
        """The Deployments and the Service as the plan has them; unchanged ones are not sent."""
        placement = replace(self.config.placement, allowed_gpu_types=plan.allowed_gpu_types)
        wanted = deployment_manifests(
            svc, plan.on_demand, plan.by_policy, placement, self.config.server, plan.spot
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


def _missing_claims(pods: Sequence[Body]) -> tuple[str, ...]:
    """The PersistentVolumeClaims the scheduler says the pending replicas lack."""
    found = (missing_claims(scheduled(p)) for p in pods if is_pending(p))
    return tuple(dict.fromkeys(name for names in found for name in names))


def _held_back(pods: Sequence[Body]) -> str | None:
    """The scheduler's message for a pending replica that no node would let run (a claim,
    a gate), or None."""
    for pod in pods:
        verdict = scheduled(pod)
        if is_pending(pod) and verdict is not None and not waits_for_capacity(verdict):
            return verdict.message.split(" preemption:", 1)[0][:300] or verdict.reason
    return None


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
