"""What a TrainingJob's workers should be now, from what its pods and their nodes show.

    decision = decide_workers(job, workers, now)      # pure: no I/O, no clock

The TrainingJob controller observes the job's worker pods (and whether each one's node is
gone, NotReady or announced for interruption), calls this, and carries the decision out:
create the missing workers, delete the ones that are done for, write status. Each worker is a
pod named `<job>-worker-<i>`; `i` is stable, so a lost worker is replaced under its own name.

How a worker that stopped is counted (the CRD and docs/controllers/trainingjob.md, "Lost
workers: preemptions, restarts and the rendezvous store", say the same):

- **preemption**: its node was deleted, went NotReady, or carries an interruption notice; or
  the trainer exited with `PREEMPTED` (75: checkpointed on SIGTERM, resumable); or it was
  killed by a signal from outside (exit code 128 + n, other than an OOM kill, or torchrun's
  exit 1 with `AGENT_SIGNALLED` in its termination message); or the kubelet
  evicted it. Preemptions never count against `runPolicy.backoffLimit`.
- **store lost**: worker 0's torchrun agent hosts the c10d rendezvous store. When worker 0 is
  lost, the other workers' agents cannot reach the store and exit 1 with
  `RendezvousConnectionError` (torch's elastic agent does not survive its store). A worker
  that failed so while no worker 0 that was there when it started is running (lost, failed,
  replaced since, or not running yet) is replaced and counted as **neither**: the loss is
  worker 0's, counted once, and a capacity wait for worker 0 is not the program's failure.
  The error text is read from the container's termination message (the pods set
  `terminationMessagePolicy: FallbackToLogsOnError`, which keeps the end of the log). While
  the worker 0 it joined runs, the same error is a failure like any other: a store that
  never answered is a misconfiguration, and backoffLimit ends it.
- **restart**: the program failed (exit codes 1-127 other than 75, or an OOM kill).
  When restarts exceed `backoffLimit` the job fails with reason BackoffLimitExceeded.
- **success**: a worker exited 0. torchrun's workers finish together, so the first success
  ends the job: the others are left to finish and are not replaced.

A worker is counted once: the decision lists the workers it counts (`counted`), and the
controller records their uids in `status.countedPods` together with the new counts before it
deletes them; a worker found there again (`Worker.counted`, e.g. after a restart of the
operator between the record and the deletion) is deleted but not counted again.

The job runs while at least `workers.min` workers run (torchrun's `--nnodes=MIN:MAX` keeps
training going on the survivors and re-rendezvous when a worker joins); below that it waits in
phase Pending with a reason that says why, and never fails for lack of capacity.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Final, Literal

from sparsam.api import constants as c
from sparsam.api.conditions import parse_rfc3339
from sparsam.api.trainingjob import Phase, TrainingJob

if TYPE_CHECKING:  # reach imports the planner, which imports the policy, which imports this
    from sparsam.decisions.reach import Reach

#: Exit codes of `python -m sparsam_trainer` (trainer/sparsam_trainer/exitcodes.py).
EXIT_PREEMPTED: Final = 75
#: 128 + SIGKILL: what an OOM kill looks like, told apart by the container's reason.
OOM_KILLED: Final = "OOMKilled"
#: What torchrun's agent dies of when the rendezvous store (worker 0's agent) is gone.
STORE_LOST: Final = "RendezvousConnectionError"
#: What torchrun's agent dies of on a signal (SIGTERM when its pod is deleted): it stops its
#: workers (the trainer checkpoints and exits 75), then exits 1 with this as its last log line.
AGENT_SIGNALLED: Final = "torch.distributed.elastic.multiprocessing.api.SignalException"
#: How long a worker created by the controller is taken to exist though the watch cache does
#: not show it yet (see `awaited`); after that it is created again (a 409 if it does exist).
CREATE_PATIENCE: Final = timedelta(seconds=60)
#: At most this many workers are created in one pass (in slow-start batches within it): a pass
#: of a job asking for thousands makes bounded work, and the next pass creates the next ones.
CREATE_PER_PASS: Final = 64

PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
Outcome = Literal["active", "succeeded", "preempted", "failed"]


@dataclass(frozen=True, slots=True)
class Worker:
    """One observed worker pod."""

    index: int
    name: str
    phase: PodPhase
    #: The trainer container's exit code once it terminated, else None.
    exit_code: int | None = None
    #: The terminated container's reason (OOMKilled, Error, ...), or the pod's (Evicted).
    reason: str | None = None
    #: Why its node is lost (deleted, NotReady, an interruption notice), or None.
    node_lost: str | None = None
    #: The pod is on its way out (a deletionTimestamp, or the controller deleted it already):
    #: it is not counted again, and until it is gone or counted it is not replaced.
    deleting: bool = False
    #: Its end is already in status (status.countedPods): it is deleted, not counted again.
    counted: bool = False
    #: Its pod no longer exists (it vanished between two passes): counted, nothing to delete.
    gone: bool = False
    #: The terminated container's message (the end of its log, for a failure), or None.
    message: str | None = None
    #: When its pod was created, and when its container started, running or since ended (for
    #: `lost_its_store` and `start_time`).
    created: datetime | None = None
    started: datetime | None = None


def outcome(worker: Worker) -> Outcome:
    """What a worker's state means for the job (see the module docstring)."""
    if worker.phase == "Succeeded" or (worker.phase == "Failed" and worker.exit_code == 0):
        return "succeeded"
    if worker.node_lost is not None:
        return "preempted"
    if worker.phase != "Failed":
        return "active"
    code = worker.exit_code
    if code == EXIT_PREEMPTED or worker.reason in ("Evicted", "Preempting", "Shutdown"):
        return "preempted"
    if code is not None and code >= 128 and worker.reason != OOM_KILLED:
        return "preempted"
    if code == 1 and AGENT_SIGNALLED in (worker.message or ""):
        return "preempted"
    return "failed"


def lost_its_store(worker: Worker, workers: Collection[Worker]) -> bool:
    """`worker` failed because the rendezvous store was not there: its agent died of
    `STORE_LOST`, and no worker 0 that existed when it started is running now. A worker with
    no start time is taken at its word as a failure (nothing proves otherwise)."""
    started = worker.started
    if worker.index == 0 or started is None or STORE_LOST not in (worker.message or ""):
        return False
    return not any(
        hosts_the_store(other) and other.created is not None and other.created <= started
        for other in workers
    )


def start_time(workers: Collection[Worker], now: datetime) -> datetime:
    """When the job started: its first worker container's start (of those not on their way
    out), else `now`. Not the time of the pass that first reports Running: a paced report
    (`handlers.pacing`) can come tens of seconds later, and `activeDeadlineSeconds` counts
    from here."""
    starts = (w.started for w in workers if w.started is not None and not w.deleting)
    return min(starts, default=now)


def hosts_the_store(worker: Worker) -> bool:
    """A worker 0 that runs, and with it its agent's rendezvous store."""
    return (
        worker.index == 0
        and worker.phase == "Running"
        and outcome(worker) == "active"
        and not worker.deleting
    )


@dataclass(frozen=True, slots=True)
class BudgetStop:
    """A spent budget: Suspend or Fail stop the workers; BlockNew keeps a job that has not
    started from starting (running work goes on)."""

    action: Literal["Suspend", "Fail", "BlockNew"]
    message: str
    #: The Ready condition's reason; a CostPolicy that requires compression blocks a job
    #: without spec.compression from starting the same way (CompressionRequired).
    reason: str = "BudgetExceeded"


@dataclass(frozen=True, slots=True)
class WorkerDecision:
    """What to do and what to report. `ready` is the Ready condition (status, reason,
    message); `events` are (type, reason, message) for the job."""

    phase: Phase
    desired: int
    running: int
    create: tuple[int, ...] = ()
    delete: tuple[str, ...] = ()
    #: The workers whose end this decision counts and whose pods it deletes (the controller
    #: records them with the counts before it deletes them).
    counted: tuple[str, ...] = ()
    preemptions: int = 0
    restarts: int = 0
    ready: tuple[Literal["True", "False"], str, str] = ("True", "Running", "")
    finished: bool = False
    events: tuple[tuple[str, str, str], ...] = ()


def worker_name(job: str, index: int) -> str:
    return f"{job}-worker-{index}"


def selector(job: str) -> str:
    """status.selector: the workers, for the /scale subresource."""
    return f"{c.LABEL_JOB}={job},{c.LABEL_ROLE}={c.ROLE_WORKER}"


def desired_workers(job: TrainingJob) -> int:
    """spec.workers.replicas when /scale set it, else workers.max: the pods that cannot be
    scheduled wait for capacity, and training runs on the ones that can (>= min)."""
    workers = job.spec.workers
    return workers.replicas if workers.replicas is not None else workers.max


def decide_workers(
    job: TrainingJob,
    workers: Sequence[Worker],
    now: datetime,
    budget: BudgetStop | None = None,
    reach: Reach | None = None,
) -> WorkerDecision:
    """The decision for `job` given its observed `workers` at `now`. `budget` says a budget
    (the job's own, or its CostPolicy's) is spent and what that does to the job. `reach` is
    how many workers the cluster could ever hold (None: not known): no more are created, and
    fewer than `workers.min` make the job Unschedulable rather than waiting for capacity."""
    status = job.status
    preemptions, restarts = status.preemptions, status.restarts
    wanted = desired_workers(job)
    desired = wanted if reach is None else min(wanted, reach.pods)
    events: list[tuple[str, str, str]] = []
    delete: list[str] = []
    counted: list[str] = []
    live: dict[int, Worker] = {}
    # Worker 0's agent hosts the rendezvous store. A worker that failed for want of it is
    # replaced once a worker 0 runs, not before: until then its replacement could only wait
    # for the store and fail the same way, every ~2m20s, for as long as worker 0 waits for
    # capacity. Its Failed pod stays meanwhile, holding its name.
    store_up = any(hosts_the_store(w) for w in workers)
    held: set[int] = set()
    # A pod on its way out whose end is not counted yet (evicted by a drain, deleted by
    # someone) holds its name until it is gone; the pass that finds it gone counts it (from
    # status.workerPods) and creates its replacement, in that order. Created sooner, in the
    # moment the old pod vanishes, the replacement could be seen before the loss it replaces.
    leaving: set[int] = set()
    succeeded = False
    for worker in sorted(workers, key=lambda w: w.index):
        result = outcome(worker)
        if worker.deleting and not worker.counted and not worker.gone:
            leaving.add(worker.index)
        if result == "succeeded":
            succeeded = True
        elif result == "active":
            if not worker.deleting:
                live[worker.index] = worker
        elif not worker.deleting:
            no_store = result == "failed" and lost_its_store(worker, workers)
            if no_store and not store_up and not worker.gone and worker.index < desired:
                held.add(worker.index)
            elif not worker.gone:
                delete.append(worker.name)
            if worker.counted:
                continue
            if not worker.gone:
                counted.append(worker.name)
            if no_store:
                why = f"no rendezvous store without worker 0 ({_exit(worker)}); not counted"
                events.append(("Warning", "RendezvousStoreLost", f"{worker.name}: {why}"))
            elif result == "preempted":
                preemptions += 1
                why = worker.node_lost or _exit(worker)
                events.append(("Warning", "WorkerPreempted", f"{worker.name}: {why}"))
            else:
                restarts += 1
                events.append(("Warning", "WorkerFailed", f"{worker.name}: {_exit(worker)}"))

    running = sum(1 for w in live.values() if w.phase == "Running")
    counts = Counts(wanted, running, preemptions, restarts, tuple(counted))

    if succeeded:
        return WorkerDecision(
            "Succeeded",
            wanted,
            running,
            counted=tuple(counted),
            preemptions=preemptions,
            restarts=restarts,
            ready=("True", "Succeeded", "training finished"),
            finished=True,
            events=(*events, ("Normal", "Succeeded", "training finished")),
        )
    limit = job.spec.run_policy.backoff_limit
    if restarts > limit:
        message = f"{restarts} worker failures exceed runPolicy.backoffLimit {limit}"
        return _stop("Failed", counts, workers, "BackoffLimitExceeded", message, events)
    deadline = job.spec.run_policy.active_deadline
    started = parse_rfc3339(status.start_time)
    if deadline is not None and started is not None and now - started > deadline:
        message = f"running longer than runPolicy.activeDeadlineSeconds ({deadline})"
        return _stop("Failed", counts, workers, "DeadlineExceeded", message, events)
    if budget is not None and budget.action in ("Suspend", "Fail"):
        phase: Phase = "Failed" if budget.action == "Fail" else "Suspended"
        return _stop(phase, counts, workers, budget.reason, budget.message, events)
    blocked = budget is not None and job.status.start_time is None and not live
    if job.spec.run_policy.suspend:
        return _stop("Suspended", counts, workers, "Suspended", "runPolicy.suspend is true", events)

    # Only workers the cluster could never hold go beyond `desired`: those of them that do
    # run (a pool shrank under them) are left to run, the waiting ones are removed.
    delete.extend(
        w.name
        for i, w in sorted(live.items())
        if i >= wanted or (i >= desired and w.phase != "Running")
    )
    taken = live.keys() | held | leaving
    missing = (i for i in range(desired) if i not in taken)
    create = tuple(islice(missing, CREATE_PER_PASS))
    minimum = job.spec.workers.min
    if blocked and budget is not None:
        return WorkerDecision(
            "Pending",
            wanted,
            0,
            counted=tuple(counted),
            preemptions=preemptions,
            restarts=restarts,
            ready=("False", budget.reason, budget.message),
            events=tuple(events),
        )
    if running >= minimum:
        phase = "Running"
        capped = "" if desired == wanted else f" (the cluster could hold at most {desired})"
        ready: tuple[Literal["True", "False"], str, str] = (
            "True",
            "Running",
            f"{running} of {wanted} workers running{capped}",
        )
    elif reach is not None and reach.pods < minimum:
        # Waiting would be forever: no pool can ever grow to hold workers.min of them. None
        # is created: the few that fit would hold GPUs, paid for, with nothing to train.
        message = (
            f"workers.min is {minimum}, the cluster could hold at most {reach.pods} "
            f"such workers: {reach.why()}"
        )
        return WorkerDecision(
            "Pending",
            wanted,
            running,
            delete=tuple(delete),
            counted=tuple(counted),
            preemptions=preemptions,
            restarts=restarts,
            ready=("False", "Unschedulable", message),
            events=(*events, ("Warning", "Unschedulable", message)),
        )
    else:
        phase = "Pending"
        waiting = sum(1 for w in live.values() if w.phase == "Pending") + len(create)
        ready = (
            "False",
            "WaitingForWorkers",
            f"{running} of the {minimum} workers training needs are running "
            f"({waiting} waiting for capacity); the job waits, it does not fail",
        )
    return WorkerDecision(
        phase,
        wanted,
        running,
        create=create,
        delete=tuple(delete),
        counted=tuple(counted),
        preemptions=preemptions,
        restarts=restarts,
        ready=ready,
        events=tuple(events),
    )


@dataclass(frozen=True, slots=True)
class Counts:
    desired: int
    running: int
    preemptions: int
    restarts: int
    counted: tuple[str, ...]


def awaited(
    created: Mapping[str, datetime],
    shown: Collection[str],
    now: datetime,
    patience: timedelta = CREATE_PATIENCE,
) -> dict[str, datetime]:
    """Of the worker pods created (name -> when), those the cache does not show yet and that
    are younger than `patience`: a pass must not create them again. Under load the watch lags
    the creates by seconds, longer than a pass interval; without this every pass in between
    would post the same pods and Service again, only to be told 409 (Kubernetes' controllers
    keep the same "expectations"). A pod the cache shows, or one deleted before it ever showed,
    is no longer awaited, at the latest after `patience`."""
    return {name: at for name, at in created.items() if name not in shown and now - at < patience}


def expired(job: TrainingJob, now: datetime) -> bool:
    """A finished job past runPolicy.ttlSecondsAfterFinished: delete it (its workers go with
    it by owner reference; its model and InferenceService do not)."""
    ttl = job.spec.run_policy.ttl_after_finished
    done = parse_rfc3339(job.status.completion_time)
    return job.status.finished and ttl is not None and done is not None and now - done >= ttl


def _stop(
    phase: Phase,
    counts: Counts,
    workers: Sequence[Worker],
    reason: str,
    message: str,
    events: list[tuple[str, str, str]],
) -> WorkerDecision:
    """Remove every worker (a Suspended job resumes from its checkpoint later)."""
    return WorkerDecision(
        phase,
        counts.desired,
        0,
        delete=tuple(w.name for w in workers if not w.deleting),
        counted=counts.counted,
        preemptions=counts.preemptions,
        restarts=counts.restarts,
        ready=("False", reason, message),
        finished=phase == "Failed",
        events=(*events, ("Warning" if phase == "Failed" else "Normal", reason, message)),
    )


def _exit(worker: Worker) -> str:
    parts = [f"exit code {worker.exit_code}" if worker.exit_code is not None else "no exit code"]
    if worker.reason:
        parts.append(worker.reason)
    return ", ".join(parts)
