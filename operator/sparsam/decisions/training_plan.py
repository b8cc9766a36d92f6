"""A TrainingJob pass's one decision: what the pass observed in, the plan it carries out.

    plan = decide_training(observed, policy, now)     # pure: no I/O, no clock

The controller observes (the job, its worker pods as `Worker`s with their uids and whether
their node is gone, the compress pod, the cost accrued up to now, what it remembers of its own
deletions, creations and alerts), calls this, and carries the plan out in this order: delete
the job (`delete_job`), write `counts`, delete `delete`, create the workers of `create` (with
`checkpoint_interval`), the compress pod, apply the InferenceService of `deploy_uri`; then
report `status` and `events`.

The decisions it composes: `training.decide_workers` (what the workers should be),
`delivery.decide_delivery` (compress, then deploy), `checkpointing` (the cadence new workers
get), `cost.budget_action` (spec.budget) and the effective policy's stops and spot choice.
What it adds is the bookkeeping that keeps a worker's end counted once across crashes
(docs/architecture.md, "Counted once, across crashes"): the counts and the uids they count
are written before the pods are deleted, the workers a pass leaves running go to
`status.workerPods`, and one of those that vanished is counted as a preemption.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sparsam.api import constants as c
from sparsam.api.common import SpotPolicy
from sparsam.api.conditions import READY, parse_rfc3339, rfc3339, set_condition
from sparsam.api.trainingjob import TrainingJob
from sparsam.decisions.checkpointing import (
    CheckpointInterval,
    CheckpointSettings,
    Observed,
    checkpoint_interval,
    estimate_hazard,
)
from sparsam.decisions.cost import Accrual, budget_action, cost_status_to_write
from sparsam.decisions.delivery import CompressPod, decide_delivery, delivers
from sparsam.decisions.effective_policy import EffectivePolicy, choose_spot, compression_stop
from sparsam.decisions.reach import Reach
from sparsam.decisions.training import (
    BudgetStop,
    Worker,
    WorkerDecision,
    awaited,
    decide_workers,
    desired_workers,
    selector,
    start_time,
    worker_name,
)

#: An Event for the job: (type, reason, message).
EventTuple = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ObservedPod:
    """One worker pod from the cache, as the decision sees it."""

    worker: Worker
    uid: str
    #: The pod is bound to a node that no longer exists: no kubelet will confirm its end.
    orphan: bool = False


@dataclass(frozen=True, slots=True)
class TrainingObserved:
    """What one pass of a TrainingJob observed, and what the controller remembers of it."""

    job: TrainingJob
    pods: tuple[ObservedPod, ...] = ()
    compress: CompressPod | None = None
    #: The cost accrued up to now: of the workers, or of the compress pod while delivering;
    #: None for a finished job (nothing accrues).
    accrual: Accrual | None = None
    #: When this operator last wrote the job's status.cost (None: not since it started).
    cost_written: datetime | None = None
    #: Uids of the job's pods this operator deleted (or counted as vanished) itself.
    handled: frozenset[str] = frozenset()
    #: Worker pods this operator created (name -> when) that the cache may not show yet.
    created: Mapping[str, datetime] = field(default_factory=dict)
    #: The spec.budget BudgetExceeded Event has been posted already.
    alerted: bool = False
    #: What the workers report of their checkpoints (None where nothing says).
    write_seconds: float | None = None
    checkpoint_step: int | None = None
    checkpoint_time: datetime | None = None
    #: How many of its workers the cluster could ever hold (None: not known).
    reach: Reach | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the operator itself observed of a job's end (`ANNOTATION_OUTCOME`): Trained
    (training succeeded; compression and deployment follow), Succeeded or Failed, and when."""

    stage: str
    at: datetime

    def to_annotation(self) -> str:
        return f"{self.stage} {rfc3339(self.at)}"


_STAGES = ("Trained", "Succeeded", "Failed")


def recorded_outcome(job: TrainingJob) -> Outcome | None:
    """The outcome the operator recorded on `job`, or None. status.phase is not read: anyone
    who may write a job's status could otherwise make it finish, and its TTL delete it."""
    stage, _, at = job.metadata.annotations.get(c.ANNOTATION_OUTCOME, "").partition(" ")
    when = parse_rfc3339(at)
    if stage not in _STAGES or when is None:
        return None
    return Outcome(stage, when)


@dataclass(frozen=True, slots=True)
class PodDeletion:
    name: str
    uid: str
    #: Force (grace period 0): its node is gone, and no kubelet will confirm its end.
    force: bool = False


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """What a pass does, in the order the controller carries it out."""

    #: The status to report (merged into the job's), and the Events.
    status: Mapping[str, Any]
    events: tuple[EventTuple, ...] = ()
    #: The phase this pass leaves the job in (for the phase gauge); None: none set.
    phase: str | None = None
    #: Delete the job: it finished longer ago than ttlSecondsAfterFinished.
    delete_job: bool = False
    #: Record this outcome on the job (`ANNOTATION_OUTCOME`) before anything else is written.
    record: Outcome | None = None
    #: Written before any pod is deleted: the new counts and the uids of the pods they count.
    counts: Mapping[str, Any] | None = None
    delete: tuple[PodDeletion, ...] = ()
    #: Worker indices to create, their spot policy, allowed GPU types and checkpoint interval.
    create: tuple[int, ...] = ()
    spot: SpotPolicy = "Prefer"
    allowed_gpu_types: tuple[str, ...] | None = None
    checkpoint_interval: str | None = None
    #: Create the compress pod, with this cap on its accuracy drop.
    create_compress: bool = False
    max_accuracy_drop: float | None = None
    #: Apply the InferenceService of spec.deploy with this model URI.
    deploy_uri: str | None = None
    #: The delivery decision made this plan (training is over).
    delivery: bool = False
    #: What the controller remembers next: the handled uids before this plan's deletions
    #: (None: unchanged), the workers still awaited in the cache (None: unchanged), whether
    #: the budget Alert is posted, and whether `status` carries the cost.
    handled: frozenset[str] | None = None
    awaited: Mapping[str, datetime] | None = None
    alerted: bool = False
    cost_written: bool = False
    #: Preemptions and restarts this plan counts (for the counters).
    preempted: int = 0
    restarted: int = 0


def decide_training(
    observed: TrainingObserved,
    policy: EffectivePolicy,
    now: datetime,
    settings: CheckpointSettings | None = None,
) -> TrainingPlan:
    """The plan for one pass of `observed.job` under its effective `policy` at `now`."""
    job = observed.job
    outcome = recorded_outcome(job)
    if outcome is not None and outcome.stage == "Trained":
        # The compress pod's GPU time is the job's too.
        cost = cost_status_to_write(
            observed.accrual, observed.job.status.cost, observed.cost_written, now
        )
        return _deliver(observed, policy, now, {"cost": cost} if cost else {}, ())
    if outcome is not None:
        ttl = job.spec.run_policy.ttl_after_finished
        if ttl is not None and now - outcome.at >= ttl:
            seconds = job.spec.run_policy.ttl_seconds_after_finished
            expiry = ("Normal", "Expired", f"deleted {seconds}s after it finished")
            return TrainingPlan({}, (expiry,), delete_job=True, alerted=observed.alerted)
        # The phase is what was observed, whatever status says now.
        status: dict[str, Any] = {}
        if job.status.phase != outcome.stage:
            status = {"phase": outcome.stage, "completionTime": rfc3339(outcome.at)}
        return TrainingPlan(status, alerted=observed.alerted)
    return _train(observed, policy, now, settings or CheckpointSettings())


def _train(
    observed: TrainingObserved,
    policy: EffectivePolicy,
    now: datetime,
    settings: CheckpointSettings,
) -> TrainingPlan:
    job = observed.job
    accrual = observed.accrual or Accrual(accrued_up_to=now)
    budget_events, stop, alerted = _budget(job, accrual, observed.alerted)
    stop = stop or policy.budget_stop or compression_stop(job, policy)
    spot = choose_spot(job.spec.capacity.spot, policy)
    workers, handled = _workers(observed)
    decision = decide_workers(job, workers, now, stop, observed.reach)
    uids = {p.worker.name: p.uid for p in observed.pods}
    orphans = {p.worker.name for p in observed.pods if p.orphan}
    counted = sorted(
        {u for u in job.status.counted_pods if u in uids.values()}
        | {uids[name] for name in decision.counted}
    )
    # The workers this pass leaves running (those it deletes are counted, or not lost).
    left = [
        {"name": name, "uid": uid}
        for name, uid in sorted(uids.items())
        if uid not in handled and name not in decision.delete
    ]
    counts: dict[str, Any] | None = None
    recounted = (decision.preemptions, decision.restarts) != (
        job.status.preemptions,
        job.status.restarts,
    )
    if recounted or set(counted) - set(job.status.counted_pods):
        # The counts first, with the pods they count: a crash after this write leaves the
        # pods to delete, not to count; one before it leaves everything to do again. A worker
        # whose pod is already gone (evicted by a drain) is counted here too, so that no
        # replacement is ever seen before the loss it replaces.
        counts = {
            "preemptions": decision.preemptions,
            "restarts": decision.restarts,
            "countedPods": counted,
            "workerPods": left,
        }
    # Every worker the decision counted is among these: deleted, and never counted again. A
    # pod whose node is gone is removed at once, as the pod GC would do later, so that its
    # replacement can take its name now.
    delete = tuple(
        PodDeletion(name, uids[name], force=name in orphans)
        for name in decision.delete
        if name in uids
    )
    cadence = _cadence(job, accrual, policy, spot.policy, observed.write_seconds, settings)
    waiting = awaited(observed.created, uids.keys(), now)
    create = tuple(i for i in decision.create if worker_name(job.metadata.name, i) not in waiting)
    interval = None if cadence is None else f"{max(1, round(cadence.seconds))}s"

    status = _status(job, decision, workers, now)
    status["spot"] = spot.to_raw()
    if observed.checkpoint_step is not None and observed.checkpoint_time is not None:
        step, at = observed.checkpoint_step, rfc3339(observed.checkpoint_time)
        status["lastCheckpoint"] = {"step": step, "time": at}
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
    # At most every 30 s while it runs, and with every change of phase, so that a suspended
    # or finished job shows what it cost.
    cost = cost_status_to_write(
        observed.accrual,
        job.status.cost,
        observed.cost_written,
        now,
        force=decision.phase != job.status.phase,
    )
    if cost is not None:
        status["cost"] = cost
    plan = TrainingPlan(
        status,
        budget_events + decision.events,
        phase=decision.phase,
        counts=counts,
        delete=delete,
        create=create,
        spot=spot.policy,
        allowed_gpu_types=policy.allowed_gpu_types,
        checkpoint_interval=interval,
        handled=handled,
        awaited=waiting,
        alerted=alerted,
        cost_written=cost is not None,
        preempted=max(0, decision.preemptions - job.status.preemptions),
        restarted=max(0, decision.restarts - job.status.restarts),
        record=Outcome(decision.phase, now) if decision.finished else None,
    )
    if decision.phase == "Succeeded" and delivers(job):
        # Training is done; compression and deployment follow (decisions.delivery).
        return _deliver(observed, policy, now, status, budget_events, plan)
    return plan


def _workers(observed: TrainingObserved) -> tuple[list[Worker], frozenset[str]]:
    """The job's workers as `decide_workers` sees them, and the handled uids: its pods, and
    the workers of status.workerPods gone since (never counted yet), which join the handled
    ones. A handled uid neither the cache nor status shows any more is forgotten."""
    status = observed.job.status
    shown = {p.uid for p in observed.pods}
    shown.update(ref.uid for ref in status.worker_pods)
    shown.update(status.counted_pods)
    handled = set(observed.handled & shown)
    workers = [
        replace(
            p.worker,
            deleting=p.worker.deleting or p.uid in handled,
            counted=p.uid in status.counted_pods,
        )
        for p in observed.pods
    ]
    present = {p.uid for p in observed.pods}
    for ref in status.worker_pods:
        if ref.uid in present or ref.uid in handled or ref.uid in status.counted_pods:
            continue  # there, handled, or counted then deleted: not lost
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
    return workers, frozenset(handled)


def _deliver(
    observed: TrainingObserved,
    policy: EffectivePolicy,
    now: datetime,
    status: Mapping[str, Any],
    events: tuple[EventTuple, ...],
    base: TrainingPlan | None = None,
) -> TrainingPlan:
    """After training: the compress pod, then the InferenceService (`status` is what the
    pass has reported so far, if anything; `base` the workers' plan of the pass that saw
    training end)."""
    job = observed.job
    decision = decide_delivery(job, observed.compress)
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
    record = None
    if decision.finished:
        record = Outcome(decision.phase, now)
    elif recorded_outcome(job) is None:
        record = Outcome("Trained", now)
    return replace(
        base or TrainingPlan({}, alerted=observed.alerted, cost_written="cost" in status),
        status=out,
        events=events + decision.events,
        phase=decision.phase,
        spot=choose_spot(job.spec.capacity.spot, policy).policy,
        allowed_gpu_types=policy.allowed_gpu_types,
        create_compress=decision.create_pod,
        max_accuracy_drop=policy.max_accuracy_drop,
        deploy_uri=decision.deploy_uri,
        delivery=True,
        record=record,
    )


def _budget(
    job: TrainingJob, accrual: Accrual, alerted: bool
) -> tuple[tuple[EventTuple, ...], BudgetStop | None, bool]:
    """spec.budget: an Event when it is spent (once: the third value says it is posted), and
    the stop when onExceeded is Suspend or Fail."""
    budget = job.spec.budget
    if budget is None:
        return (), None, alerted
    decision = budget_action(accrual.cost, budget.max_cost, (), budget.on_exceeded)
    if not decision.action_due:
        return (), None, False
    message = (
        f"accrued {accrual.cost:.2f} of spec.budget.maxCost {budget.max_cost:g} "
        f"(onExceeded: {budget.on_exceeded})"
    )
    events: tuple[EventTuple, ...] = () if alerted else (("Warning", "BudgetExceeded", message),)
    if budget.on_exceeded == "Alert":
        return events, None, True
    return events, BudgetStop(budget.on_exceeded, message), True


def _cadence(
    job: TrainingJob,
    accrual: Accrual,
    policy: EffectivePolicy,
    spot: SpotPolicy,
    write_seconds: float | None,
    settings: CheckpointSettings,
) -> CheckpointInterval | None:
    """The checkpoint interval new workers get: the spec's, or Young/Daly from the
    preemptions this job has seen over the worker-hours it ran (the capacity type's prior
    until there are enough of them) and the checkpoint write time its workers measured (the
    default until one has written a checkpoint; status says which)."""
    checkpoint = job.spec.checkpoint
    if checkpoint is None:
        return None
    gpus = max(job.spec.resources.gpus, 1)
    observed = Observed(job.status.preemptions, accrual.gpu_seconds / 3600.0 / gpus)
    capacity = c.CAPACITY_ON_DEMAND if spot == "Never" else c.CAPACITY_SPOT
    return checkpoint_interval(
        workers=desired_workers(job),
        hazard=estimate_hazard(capacity, observed, settings),
        write_seconds=write_seconds,
        fixed=checkpoint.interval_duration,
        max_lost_work_fraction=policy.max_lost_work_fraction,
        settings=settings,
    )


def _status(
    job: TrainingJob, decision: WorkerDecision, workers: list[Worker], now: datetime
) -> dict[str, Any]:
    status = job.status
    conditions = set_condition(
        status.conditions, READY, *decision.ready, now, job.metadata.generation
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
