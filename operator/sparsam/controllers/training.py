"""The TrainingJob controller's pass: observe, decide once, carry the plan out.

Level-based like the capacity pass: each pass reads the job's pods and their nodes from the
watch caches into a `TrainingObserved`, calls `decisions.training_plan.decide_training` once,
and carries the `TrainingPlan` out (the counts written, lost or extra workers deleted, the
rendezvous Service and missing workers created, the compress pod and the InferenceService)
before it returns the job's status and Events. It decides nothing itself.

A worker's end is counted in two steps, so that no crash of the operator loses a count or
counts one twice: the plan's counts, with the uids of the pods they count, are written to
`status.countedPods` in one status write, then the pods are deleted. In memory
(`TrainingMemory`), lost on restart, are only what makes passes better: the pods this
operator deleted itself (so a pod still in a lagging cache is neither counted again nor taken
for lost), the workers it created that the cache does not show yet, and the budget alerts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sparsam import failpoints, metrics
from sparsam.api import constants as c
from sparsam.api.costpolicy import CostPolicy
from sparsam.api.gpunodepool import GPUNodePool
from sparsam.api.parse import InvalidSpec
from sparsam.api.trainingjob import TrainingJob
from sparsam.controllers.checkpoints import CheckpointReader
from sparsam.controllers.costing import CostMeter
from sparsam.controllers.locks import KeyedLocks
from sparsam.controllers.repeats import Repeats
from sparsam.controllers.results import Event, PassResult
from sparsam.decisions.cluster import CapacityRules, Pool
from sparsam.decisions.cost import PriceTable
from sparsam.decisions.effective_policy import EffectivePolicy, choose_spot, resolve_policy
from sparsam.decisions.interruption import InterruptionSignals
from sparsam.decisions.reach import Reach, pod_reach
from sparsam.decisions.training import desired_workers, worker_name
from sparsam.decisions.training_plan import (
    ObservedPod,
    TrainingObserved,
    TrainingPlan,
    decide_training,
    recorded_outcome,
)
from sparsam.kube.client import CALL_THREADS
from sparsam.kube.observe import (
    Body,
    compress_from_body,
    node_from_body,
    pod_from_body,
    worker_from_body,
)
from sparsam.kube.pods import Placement
from sparsam.kube.trainingjob import (
    compress_manifest,
    deployed_service_manifest,
    service_manifest,
    worker_manifest,
)
from sparsam.providers.metrics import CheckpointFacts

T = TypeVar("T")

#: Warnings a job's pass would find again every pass: said again only when the message
#: changes or after this long (`controllers.repeats`).
REPEATING = ("Unschedulable",)
REPEAT_EVERY = timedelta(minutes=10)


class Actuator(Protocol):
    """`kube.workers.WorkerActuator`, or a fake in unit tests."""

    def apply_service(self, manifest: dict[str, Any]) -> None: ...
    def create_pod(self, manifest: dict[str, Any]) -> bool: ...
    def delete_pod(self, namespace: str, name: str, uid: str, force: bool = False) -> None: ...
    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    def delete_job(self, namespace: str, name: str, uid: str) -> None: ...
    def annotate_job(self, namespace: str, name: str, annotations: dict[str, str]) -> None: ...
    def apply_inference_service(self, manifest: dict[str, Any]) -> None: ...


@dataclass
class TrainingMemory:
    #: Job uid -> uids of its pods deleted by us (or counted as vanished), kept while a
    #: cache or a status may still show them.
    handled: dict[str, set[str]] = field(default_factory=dict)
    #: Job uid -> worker pods created by us (name -> when) the cache does not show yet.
    created: dict[str, dict[str, datetime]] = field(default_factory=dict)
    #: Job uids whose budget Alert has been posted.
    alerted: set[str] = field(default_factory=set)


class TrainingController:
    def __init__(
        self,
        actuator: Actuator,
        placement: Placement | None = None,
        signals: InterruptionSignals | None = None,
        prices: PriceTable | None = None,
        checkpoints: CheckpointReader | None = None,
        calls: Executor | None = None,
    ) -> None:
        self._actuator = actuator
        #: Where a pass's concurrent calls run (`_create`).
        self._calls = calls or ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="sparsam-call")
        #: What the workers say of their checkpoints (None: no Prometheus configured).
        self._checkpoints = checkpoints
        self.placement = placement or Placement()
        self._signals = signals or InterruptionSignals()
        self._cost = CostMeter(c.TRAINING_JOB.kind, prices)
        self.memory = TrainingMemory()
        self._locks = KeyedLocks()
        self._repeats = Repeats(REPEATING, every=REPEAT_EVERY)

    def reconcile(
        self,
        job: TrainingJob,
        pods: Sequence[Body],
        nodes: Mapping[str, Body],
        now: datetime,
        pools: Mapping[str, Body] | None = None,
        policy: CostPolicy | None = None,
        cluster_nodes: Callable[[], Iterable[Body]] | None = None,
    ) -> PassResult:
        """One pass for `job`, given its worker pods, the nodes they are bound to and every
        GPUNodePool (for prices and reach) from the caches, and its namespace's effective
        CostPolicy (read once, here, into the `EffectivePolicy` the decision takes).
        `cluster_nodes` gives every node, read only when workers are missing (to know how
        many the cluster could ever hold); without it, `nodes` stand in. Without `pools`
        (a caller that knows none), how many it could hold is not known, nor capped."""
        effective = resolve_policy(policy)
        # Outside the job's lock: a refresh may wait on Prometheus.
        meta = job.metadata
        facts = self._checkpoints.facts(meta.namespace, meta.name) if self._checkpoints else None
        with self._locks.of(meta.uid):
            observed = self._observe(job, pods, nodes, pools or {}, now, facts)
            missing = len(observed.pods) < desired_workers(job)
            if pools is not None and recorded_outcome(job) is None and missing:
                every = cluster_nodes() if cluster_nodes is not None else nodes.values()
                reach = self.reach(job, pools, every, effective)
                observed = replace(observed, reach=reach)
            plan = decide_training(observed, effective, now)
            self._remember(job, plan, now)
            result = self._carry_out(job, plan, now)
            return replace(result, events=self._repeats.quieted(meta.uid, result.events, now))

    def reach(
        self,
        job: TrainingJob,
        pools: Mapping[str, Body],
        nodes: Iterable[Body],
        policy: EffectivePolicy,
    ) -> Reach:
        """How many of `job`'s workers the cluster could ever hold: its worker as the planner
        sees it, against every pool (a pool whose spec cannot be read holds nothing) and the
        nodes of no pool."""
        placement = replace(self.placement, allowed_gpu_types=policy.allowed_gpu_types)
        spot = choose_spot(job.spec.capacity.spot, policy).policy
        worker = pod_from_body(worker_manifest(job, 0, placement, None, spot))
        parsed: list[Pool] = []
        for body in pools.values():
            if (body.get("metadata") or {}).get("deletionTimestamp"):
                continue  # draining its nodes away
            try:
                parsed.append(Pool.from_gpunodepool(GPUNodePool.from_body(body)))
            except InvalidSpec:
                continue  # its own pass reports it; it holds nothing meanwhile
        planner_nodes = (node_from_body(body, (), self._signals).node for body in nodes)
        return pod_reach(worker, parsed, planner_nodes, CapacityRules.from_policy(policy))

    def _observe(
        self,
        job: TrainingJob,
        pods: Sequence[Body],
        nodes: Mapping[str, Body],
        pools: Mapping[str, Body],
        now: datetime,
        facts: CheckpointFacts | None,
    ) -> TrainingObserved:
        """The job's pods as the decision sees them, and what this operator remembers of it.
        The cost accrues here: of the compress pod while delivering, of the workers while
        training, of nothing once finished."""
        uid = job.metadata.uid
        workers = [p for p in pods if _role(p) != c.ROLE_COMPRESS]
        compress = next((p for p in pods if _role(p) == c.ROLE_COMPRESS), None)
        outcome = recorded_outcome(job)
        delivering = outcome is not None and outcome.stage == "Trained"
        metered: list[Body] | None = list(workers)
        if delivering:
            metered = [compress] if compress is not None else []
        elif outcome is not None:
            metered = None
        accrual = None
        if metered is not None:
            accrual = self._cost.accrue(
                job.metadata, job.status.cost, metered, job.spec.resources.gpus, nodes, pools, now
            )
        observed: list[ObservedPod] = []
        for pod in workers if not delivering else ():
            node_name = (pod.get("spec") or {}).get("nodeName")
            body = nodes.get(node_name) if node_name else None
            node = node_from_body(body, (), self._signals) if body is not None else None
            gone = bool(node_name) and body is None
            pod_uid = str((pod.get("metadata") or {}).get("uid", ""))
            worker = worker_from_body(pod, node, gone_node=gone)
            observed.append(ObservedPod(worker, pod_uid, orphan=gone))
        return TrainingObserved(
            job,
            tuple(observed),
            compress_from_body(compress) if compress is not None else None,
            accrual,
            cost_written=self._cost.written(uid),
            handled=frozenset(self.memory.handled.get(uid, ())),
            created=dict(self.memory.created.get(uid, {})),
            alerted=uid in self.memory.alerted,
            write_seconds=facts.write_seconds if facts is not None else None,
            checkpoint_step=facts.step if facts is not None else None,
            checkpoint_time=facts.time if facts is not None else None,
        )

    def _remember(self, job: TrainingJob, plan: TrainingPlan, now: datetime) -> None:
        uid = job.metadata.uid
        if plan.handled is not None:
            self.memory.handled[uid] = set(plan.handled)
        if plan.awaited is not None:
            self.memory.created[uid] = dict(plan.awaited)
        if plan.alerted:
            self.memory.alerted.add(uid)
        else:
            self.memory.alerted.discard(uid)
        if plan.cost_written:
            self._cost.wrote(uid, now)

    def _carry_out(self, job: TrainingJob, plan: TrainingPlan, now: datetime) -> PassResult:
        """Carry `plan` out, in its order: every count is written before the pods it counts
        are deleted."""
        meta = job.metadata
        namespace, uid = meta.namespace, meta.uid
        labels = (namespace, meta.name)
        events = tuple(Event(*e) for e in plan.events)
        if plan.delete_job:
            self._actuator.delete_job(namespace, meta.name, uid)
        if plan.record is not None:
            # Before the status: what a later pass believes of the job's end is only this.
            annotation = {c.ANNOTATION_OUTCOME: plan.record.to_annotation()}
            self._actuator.annotate_job(namespace, meta.name, annotation)
        if plan.phase is not None:
            metrics.set_phase(metrics.TRAINING_PHASE, labels, job.status.phase, plan.phase)
        if plan.preempted:
            metrics.PREEMPTIONS.labels(*labels).inc(plan.preempted)
        if plan.restarted:
            metrics.WORKER_FAILURES.labels(*labels).inc(plan.restarted)
        if plan.counts is not None:
            self._actuator.write_status(namespace, meta.name, dict(plan.counts))
            failpoints.hit("training.after-count", namespace)
        handled = self.memory.handled.setdefault(uid, set())
        for pod in plan.delete:
            self._actuator.delete_pod(namespace, pod.name, pod.uid, force=pod.force)
            failpoints.hit("training.after-delete", namespace)
            handled.add(pod.uid)
        if plan.create:
            placement = replace(self.placement, allowed_gpu_types=plan.allowed_gpu_types)
            manifests = [
                worker_manifest(job, i, placement, plan.checkpoint_interval, plan.spot)
                for i in plan.create
            ]
            self._create(job, manifests)
            created = self.memory.created.setdefault(uid, {})
            created.update((worker_name(meta.name, i), now) for i in plan.create)
        if plan.create_compress:
            placement = replace(self.placement, allowed_gpu_types=plan.allowed_gpu_types)
            manifest = compress_manifest(job, placement, plan.max_accuracy_drop, plan.spot)
            self._actuator.create_pod(manifest)
            failpoints.hit("training.after-compress-pod", namespace)
        if plan.deploy_uri is not None:
            self._actuator.apply_inference_service(deployed_service_manifest(job, plan.deploy_uri))
        if plan.phase is not None and not plan.delivery:
            failpoints.hit("training.before-status", namespace)
        return PassResult(dict(plan.status), events)

    def _create(self, job: TrainingJob, workers: Sequence[dict[str, Any]]) -> None:
        """The rendezvous Service and `workers`, in slow-start batches as the ReplicaSet
        controller creates pods, but from `workers.min`, not 1: the Service and as many
        workers as the job needs to start at all at once, then twice as many each time. A
        job's creation waits on a round trip or two to the apiserver, not one per worker; a
        refusal (a quota, a webhook) ends it after the batch it met."""
        namespace = job.metadata.namespace

        def service() -> None:
            self._actuator.apply_service(service_manifest(job))
            failpoints.hit("training.after-service", namespace)

        def worker(manifest: dict[str, Any]) -> Callable[[], object]:
            return lambda: self._actuator.create_pod(manifest)

        for number, batch in enumerate(slow_start(workers, job.spec.workers.min)):
            calls = [worker(m) for m in batch] + ([service] if number == 0 else [])
            futures = [self._calls.submit(call) for call in calls]
            wait(futures)
            for future in futures:
                future.result()  # the first refusal, once nothing of the batch is in flight
            failpoints.hit("training.between-workers", namespace)

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge `status` into the job's: what a pass found that differs from it."""
        self._actuator.write_status(namespace, name, status)

    def forget(self, job_uid: str, namespace: str, name: str, phase: str | None) -> None:
        """The job is gone: drop what was remembered about it, and its phase gauge."""
        metrics.set_phase(metrics.TRAINING_PHASE, (namespace, name), phase, None)
        with self._locks.of(job_uid):
            self._cost.forget(job_uid)
            self.memory.handled.pop(job_uid, None)
            self.memory.created.pop(job_uid, None)
            self.memory.alerted.discard(job_uid)
            self._repeats.forget(job_uid)
        self._locks.drop(job_uid)


def slow_start(items: Sequence[T], first: int = 1) -> list[list[T]]:
    """`items` in batches of `first`, twice that, four times, ... (the last one what is
    left)."""
    batches: list[list[T]] = []
    done, size = 0, max(1, first)
    while done < len(items):
        batches.append(list(items[done : done + size]))
        done, size = done + size, size * 2
    return batches


def _role(pod: Body) -> str | None:
    labels: Mapping[str, str] = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(c.LABEL_ROLE)
