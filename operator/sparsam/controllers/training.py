"""The TrainingJob controller's pass: observe the workers, decide, create and delete, report.

Level-based like the capacity pass: each pass reads the job's worker pods and their nodes from
the watch caches, calls `decisions.training.decide_workers`, and carries the decision out
(the rendezvous Service, missing workers created, lost or extra ones deleted) before it
returns the job's status.

A worker's end is counted in two steps, so that no crash of the operator loses a count or
counts one twice: the new counts and the uids of the pods they count go to
`status.countedPods` in one status write, then the pods are deleted; a pod found there is
deleted but never counted again, and its uid is dropped once the pod is gone.

The worker pods a pass leaves running go to `status.workerPods` with that pass's status, so a
worker that vanished before the next pass (evicted by a drain, deleted by someone, or while
the operator was down) is counted as a preemption. In memory (`TrainingMemory`), lost on
restart, are only the pods it has deleted itself, so that a pod still in a lagging cache
without its deletionTimestamp is neither counted again nor taken for lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sparsam import failpoints, metrics
from sparsam.api import constants as c
from sparsam.api.common import SpotPolicy
from sparsam.api.conditions import READY, rfc3339, set_condition
from sparsam.api.costpolicy import CostPolicy
from sparsam.api.trainingjob import TrainingJob
from sparsam.controllers.checkpoints import CheckpointReader
from sparsam.controllers.costing import CostMeter
from sparsam.controllers.locks import KeyedLocks
from sparsam.controllers.results import Event, PassResult
from sparsam.decisions.checkpointing import (
    CheckpointInterval,
    CheckpointSettings,
    Observed,
    checkpoint_interval,
    estimate_hazard,
)
from sparsam.decisions.cost import Accrual, PriceTable, budget_action
from sparsam.decisions.delivery import CompressPod, PodPhase, decide_delivery, delivers
from sparsam.decisions.effective_policy import (
    EffectivePolicy,
    choose_spot,
    compression_stop,
    resolve_policy,
)
from sparsam.decisions.interruption import InterruptionSignals
from sparsam.decisions.training import (
    BudgetStop,
    Worker,
    WorkerDecision,
    awaited,
    decide_workers,
    desired_workers,
    expired,
    start_time,
)
from sparsam.kube.client import CALL_THREADS
from sparsam.kube.observe import Body, node_from_body, worker_from_body
from sparsam.kube.pods import Placement
from sparsam.kube.trainingjob import (
    compress_manifest,
    deployed_service_manifest,
    selector,
    service_manifest,
    worker_manifest,
    worker_name,
)
from sparsam.providers.metrics import CheckpointFacts

T = TypeVar("T")


class Actuator(Protocol):
    """`kube.workers.WorkerActuator`, or a fake in unit tests."""

    def apply_service(self, manifest: dict[str, Any]) -> None: ...
    def create_pod(self, manifest: dict[str, Any]) -> bool: ...
    def delete_pod(self, namespace: str, name: str, uid: str, force: bool = False) -> None: ...
    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    def delete_job(self, namespace: str, name: str, uid: str) -> None: ...
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
        self._cadence_settings = CheckpointSettings()
        self.memory = TrainingMemory()
        self._locks = KeyedLocks()

    def reconcile(
        self,
        job: TrainingJob,
        pods: Sequence[Body],
        nodes: Mapping[str, Body],
        now: datetime,
        pools: Mapping[str, Body] | None = None,
        policy: CostPolicy | None = None,
    ) -> PassResult:
        """One pass for `job`, given its worker pods, every node and every GPUNodePool (for
        prices) from the caches, and its namespace's effective CostPolicy (read once, here,
        into the `EffectivePolicy` the rest of the pass takes)."""
        effective = resolve_policy(policy)
        workers = [p for p in pods if _role(p) != c.ROLE_COMPRESS]
        compress = next((p for p in pods if _role(p) == c.ROLE_COMPRESS), None)
        # Outside the job's lock: a refresh may wait on Prometheus.
        meta = job.metadata
        facts = self._checkpoints.facts(meta.namespace, meta.name) if self._checkpoints else None
        with self._locks.of(job.metadata.uid):
            if job.status.phase in ("Compressing", "Deploying"):
                # The compress pod's GPU time is the job's too.
                pods_now = [compress] if compress is not None else []
                accrual = self._cost.accrue(
                    job.metadata, job.status.cost, pods_now, job.spec.resources.gpus,
                    nodes, pools or {}, now,
                )  # fmt: skip
                cost = self._cost.status(job.metadata.uid, job.status.cost, accrual, now)
                return self._deliver(job, compress, effective, now, {"cost": cost} if cost else {})
            return self._pass(job, workers, compress, nodes, pools or {}, effective, now, facts)

    def _workers(
        self, job: TrainingJob, pods: Sequence[Body], nodes: Mapping[str, Body]
    ) -> tuple[list[Worker], dict[str, str]]:
        """The job's workers as the decision sees them, and the uid of each pod by name: its
        pods, and the workers of status.workerPods that are gone since (never counted yet)."""
        workers: list[Worker] = []
        uids: dict[str, str] = {}
        handled = self._handled(job, pods)
        for pod in pods:
            meta = pod.get("metadata") or {}
            uid, name = str(meta.get("uid", "")), str(meta.get("name", ""))
            uids[name] = uid
            node_name = (pod.get("spec") or {}).get("nodeName")
            body = nodes.get(node_name) if node_name else None
            facts = node_from_body(body, (), self._signals) if body is not None else None
            gone = bool(node_name) and body is None
            worker = worker_from_body(pod, facts, gone_node=gone, deleting=uid in handled)
            workers.append(replace(worker, counted=uid in job.status.counted_pods))
        present = set(uids.values())
        for ref in job.status.worker_pods:
            if ref.uid in present or ref.uid in handled:
                continue
            if ref.uid in job.status.counted_pods:
                continue  # counted, then deleted: not lost
            index = ref.name.rsplit("-", 1)[-1]
            workers.append(
                Worker(
                    int(index) if index.isdigit() else -1,
                    ref.name,
                    "Failed",
                    node_lost=f"pod {ref.name} was deleted (evicted, or its node drained)",
                    gone=True,
                )
            )
            handled.add(ref.uid)
        return workers, uids

    def _handled(self, job: TrainingJob, pods: Sequence[Body]) -> set[str]:
        """The job's handled pods, less those neither the cache nor status shows any more."""
        handled = self.memory.handled.setdefault(job.metadata.uid, set())
        shown = {str((p.get("metadata") or {}).get("uid")) for p in pods}
        shown.update(ref.uid for ref in job.status.worker_pods)
        shown.update(job.status.counted_pods)
        handled &= shown
        return handled

    def _pass(
        self,
        job: TrainingJob,
        pods: Sequence[Body],
        compress: Body | None,
        nodes: Mapping[str, Body],
        pools: Mapping[str, Body],
        policy: EffectivePolicy,
        now: datetime,
        facts: CheckpointFacts | None = None,
    ) -> PassResult:
        namespace = job.metadata.namespace
        if job.status.finished:
            if expired(job, now):
                self._actuator.delete_job(namespace, job.metadata.name, job.metadata.uid)
                ttl = job.spec.run_policy.ttl_seconds_after_finished
                return PassResult(
                    {}, (Event("Normal", "Expired", f"deleted {ttl}s after it finished"),)
                )
            return PassResult({})
        accrual = self._cost.accrue(
            job.metadata, job.status.cost, pods, job.spec.resources.gpus, nodes, pools, now
        )
        budget_events, stop = self._budget(job, accrual)
        stop = stop or policy.budget_stop or compression_stop(job, policy)
        spot = choose_spot(job.spec.capacity.spot, policy)
        workers, uids = self._workers(job, pods, nodes)
        handled = self.memory.handled[job.metadata.uid]
        decision = decide_workers(job, workers, now, stop)
        _count(job, decision)
        labels = (namespace, job.metadata.name)
        metrics.set_phase(metrics.TRAINING_PHASE, labels, job.status.phase, decision.phase)
        # Every worker the decision counted is among these: deleted, and never counted again.
        # A pod whose node is gone has no kubelet to confirm its end: it is removed at once,
        # as the pod GC would do later, so that its replacement can take its name now.
        placed = {
            str((p.get("metadata") or {}).get("name")): (p.get("spec") or {}).get("nodeName")
            for p in pods
        }
        orphans = {name for name, node in placed.items() if node and node not in nodes}
        present = {str((p.get("metadata") or {}).get("uid")) for p in pods}
        counted = sorted(
            {u for u in job.status.counted_pods if u in present}
            | {uids[name] for name in decision.counted}
        )
        # The workers this pass leaves running (those it deletes are counted, or not lost).
        left = [
            {"name": name, "uid": uid}
            for name, uid in sorted(uids.items())
            if uid not in handled and name not in decision.delete
        ]
        recounted = (decision.preemptions, decision.restarts) != (
            job.status.preemptions,
            job.status.restarts,
        )
        if recounted or set(counted) - set(job.status.counted_pods):
            # The counts first, with the pods they count: a crash after this write leaves
            # the pods to delete, not to count; one before it leaves everything to do again.
            # A worker whose pod is already gone (evicted by a drain) is counted here too,
            # so that no replacement is ever seen before the loss it replaces.
            self._actuator.write_status(
                namespace,
                job.metadata.name,
                {
                    "preemptions": decision.preemptions,
                    "restarts": decision.restarts,
                    "countedPods": counted,
                    "workerPods": left,
                },
            )
            failpoints.hit("training.after-count", namespace)
        for name in decision.delete:
            uid = uids.get(name)
            if uid is not None:
                self._actuator.delete_pod(namespace, name, uid, force=name in orphans)
                failpoints.hit("training.after-delete", namespace)
                handled.add(uid)
        cadence = self._cadence(job, accrual, policy, spot.policy, facts)
        created = self.memory.created[job.metadata.uid] = awaited(
            self.memory.created.get(job.metadata.uid, {}), placed, now
        )
        create = [i for i in decision.create if worker_name(job.metadata.name, i) not in created]
        if create:
            placement = replace(self.placement, allowed_gpu_types=policy.allowed_gpu_types)
            interval = None if cadence is None else f"{max(1, round(cadence.seconds))}s"
            manifests = [worker_manifest(job, i, placement, interval, spot.policy) for i in create]
            self._create(job, manifests)
            created.update((worker_name(job.metadata.name, i), now) for i in create)
        status = self._status(job, decision, workers, now)
        status["spot"] = spot.to_raw()
        if facts is not None and facts.step is not None and facts.time is not None:
            status["lastCheckpoint"] = {"step": facts.step, "time": rfc3339(facts.time)}
        # None removes a list from status once it is empty.
        if counted or job.status.counted_pods:
            status["countedPods"] = counted or None
        if decision.finished:
            left = []
        if left or job.status.worker_pods:
            status["workerPods"] = left or None
        # The interval the workers created now were given (their env is fixed at creation).
        if cadence is not None and (create or job.status.checkpoint_interval is None):
            status["checkpointInterval"] = _raw_interval(cadence)
        # At most every 30 s while it runs, and with every change of phase, so that a
        # suspended or finished job shows what it cost.
        moved = decision.phase != job.status.phase
        cost = self._cost.status(job.metadata.uid, job.status.cost, accrual, now, force=moved)
        if cost is not None:
            status["cost"] = cost
        if decision.phase == "Succeeded" and delivers(job):
            # Training is done; compression and deployment follow (decisions.delivery).
            delivered = self._deliver(job, compress, policy, now, status)
            return PassResult(delivered.status, budget_events + delivered.events)
        failpoints.hit("training.before-status", namespace)
        return PassResult(status, budget_events + _events(decision))

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

    def _deliver(
        self,
        job: TrainingJob,
        compress: Body | None,
        policy: EffectivePolicy,
        now: datetime,
        status: dict[str, Any],
    ) -> PassResult:
        """After training: the compress pod, then the InferenceService (`status` is what the
        pass has written so far, if anything)."""
        decision = decide_delivery(job, _compress_pod(compress))
        if decision.create_pod:
            placement = replace(self.placement, allowed_gpu_types=policy.allowed_gpu_types)
            spot = choose_spot(job.spec.capacity.spot, policy).policy
            cap = policy.max_accuracy_drop
            self._actuator.create_pod(compress_manifest(job, placement, cap, spot))
            failpoints.hit("training.after-compress-pod", job.metadata.namespace)
        if decision.deploy_uri is not None:
            self._actuator.apply_inference_service(
                deployed_service_manifest(job, decision.deploy_uri)
            )
        generation = job.metadata.generation
        conditions = job.status.conditions
        for cond in decision.conditions:
            conditions = set_condition(
                conditions, cond.type, cond.status, cond.reason, cond.message, now, generation
            )
        conditions = set_condition(conditions, READY, *decision.ready, now, generation)
        out = {**status, "phase": decision.phase}
        out["conditions"] = [cond.to_raw() for cond in conditions]
        if not decision.finished:
            out.pop("completionTime", None)
        elif job.status.completion_time is None:
            out["completionTime"] = rfc3339(now)
        if decision.compression is not None:
            out["compression"] = decision.compression
        if decision.deploy_uri is not None:
            out["model"] = {"uri": decision.deploy_uri}
        labels = (job.metadata.namespace, job.metadata.name)
        metrics.set_phase(metrics.TRAINING_PHASE, labels, job.status.phase, decision.phase)
        return PassResult(out, tuple(Event(*e) for e in decision.events))

    def _cadence(
        self,
        job: TrainingJob,
        accrual: Accrual,
        policy: EffectivePolicy,
        spot: SpotPolicy,
        facts: CheckpointFacts | None,
    ) -> CheckpointInterval | None:
        """The checkpoint interval new workers get: the spec's, or Young/Daly from the
        preemptions this job has seen over the worker-hours it ran (the capacity type's prior
        until there are enough of them) and the checkpoint write time its workers measured
        (the default until one has written a checkpoint; status says which)."""
        checkpoint = job.spec.checkpoint
        if checkpoint is None:
            return None
        gpus = max(job.spec.resources.gpus, 1)
        observed = Observed(job.status.preemptions, accrual.gpu_seconds / 3600.0 / gpus)
        capacity = c.CAPACITY_ON_DEMAND if spot == "Never" else c.CAPACITY_SPOT
        return checkpoint_interval(
            workers=desired_workers(job),
            hazard=estimate_hazard(capacity, observed, self._cadence_settings),
            write_seconds=facts.write_seconds if facts is not None else None,
            fixed=checkpoint.interval_duration,
            max_lost_work_fraction=policy.max_lost_work_fraction,
            settings=self._cadence_settings,
        )

    def _budget(
        self, job: TrainingJob, accrual: Accrual
    ) -> tuple[tuple[Event, ...], BudgetStop | None]:
        """spec.budget: an Event when it is spent (once), and the message that stops the job
        when onExceeded is Suspend or Fail."""
        budget = job.spec.budget
        if budget is None:
            return (), None
        decision = budget_action(accrual.cost, budget.max_cost, (), budget.on_exceeded)
        if not decision.action_due:
            self.memory.alerted.discard(job.metadata.uid)
            return (), None
        message = (
            f"accrued {accrual.cost:.2f} of spec.budget.maxCost {budget.max_cost:g} "
            f"(onExceeded: {budget.on_exceeded})"
        )
        events: tuple[Event, ...] = ()
        if job.metadata.uid not in self.memory.alerted:
            self.memory.alerted.add(job.metadata.uid)
            events = (Event("Warning", "BudgetExceeded", message),)
        if budget.on_exceeded == "Alert":
            return events, None
        return events, BudgetStop(budget.on_exceeded, message)

    def _status(
        self, job: TrainingJob, decision: WorkerDecision, workers: Sequence[Worker], now: datetime
    ) -> dict[str, Any]:
        status = job.status
        ready_status, reason, message = decision.ready
        conditions = set_condition(
            status.conditions,
            READY,
            ready_status,
            reason,
            message,
            now,
            job.metadata.generation,
        )
        out: dict[str, Any] = {
            "observedGeneration": job.metadata.generation,
            "phase": decision.phase,
            "selector": selector(job.metadata.name),
            "workers": {"desired": decision.desired, "running": decision.running},
            "preemptions": decision.preemptions,
            "restarts": decision.restarts,
            "conditions": [cond.to_raw() for cond in conditions],
        }
        if decision.phase == "Suspended":
            # As a Job's: activeDeadlineSeconds counts again from the resumed workers' start.
            out["startTime"] = None
        # A job whose only worker ran and finished between two passes never looked Running.
        elif status.start_time is None and (decision.phase == "Running" or decision.finished):
            out["startTime"] = rfc3339(start_time(workers, now))
        if decision.finished:
            out["completionTime"] = rfc3339(now)
        return out

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


def _compress_pod(pod: Body | None) -> CompressPod | None:
    """The compress pod as `decide_delivery` sees it: phase, and once ended, the container's
    exit code and termination message."""
    if pod is None:
        return None
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    exit_code: int | None = None
    message: str | None = None
    for container in status.get("containerStatuses") or ():
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            exit_code = terminated.get("exitCode")
            message = terminated.get("message")
    known: dict[str, PodPhase] = {
        "Pending": "Pending",
        "Running": "Running",
        "Succeeded": "Succeeded",
        "Failed": "Failed",
    }
    return CompressPod(known.get(phase, "Unknown"), exit_code, message)


def _events(decision: WorkerDecision) -> tuple[Event, ...]:
    return tuple(Event(kind, reason, message) for kind, reason, message in decision.events)


def _count(job: TrainingJob, decision: WorkerDecision) -> None:
    ns, name = job.metadata.namespace, job.metadata.name
    if decision.preemptions > job.status.preemptions:
        metrics.PREEMPTIONS.labels(ns, name).inc(decision.preemptions - job.status.preemptions)
    if decision.restarts > job.status.restarts:
        metrics.WORKER_FAILURES.labels(ns, name).inc(decision.restarts - job.status.restarts)


def _raw_interval(cadence: CheckpointInterval) -> dict[str, Any]:
    status = cadence.to_status()
    raw = {
        "seconds": status.seconds,
        "mode": status.mode,
        "writeSeconds": status.write_seconds,
        "meanTimeBetweenPreemptionsSeconds": status.mean_time_between_preemptions_seconds,
        "message": status.message,
    }
    return {k: v for k, v in raw.items() if v is not None}
