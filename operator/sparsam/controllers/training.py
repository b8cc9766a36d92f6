"""The TrainingJob controller's pass: observe the workers, decide, create and delete, report.

Level-based like the capacity pass: each pass reads the job's worker pods and their nodes from
the watch caches, calls `decisions.training.decide_workers`, and carries the decision out
(the rendezvous Service, missing workers created, lost or extra ones deleted) before it
returns the job's status.

What it remembers between passes (`TrainingMemory`): the pods it has already counted or
deleted, so a pod still in the cache after its deletion is not counted twice, and the pods each
job had at the last pass, so a worker that vanished in between (evicted by a drain, deleted by
someone) is counted as a preemption. After a restart both start empty: at worst one vanished
worker goes uncounted; nothing is counted twice, because deleted pods carry a
deletionTimestamp.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sparsam.api.conditions import READY, rfc3339, set_condition
from sparsam.api.trainingjob import TrainingJob
from sparsam.controllers.results import Event, PassResult
from sparsam.decisions.interruption import InterruptionSignals
from sparsam.decisions.training import Worker, WorkerDecision, decide_workers
from sparsam.kube.observe import Body, node_from_body, worker_from_body
from sparsam.kube.trainingjob import Placement, selector, service_manifest, worker_manifest


class Actuator(Protocol):
    """`kube.workers.WorkerActuator`, or a fake in unit tests."""

    def apply_service(self, manifest: dict[str, Any]) -> None: ...
    def create_pod(self, manifest: dict[str, Any]) -> bool: ...
    def delete_pod(self, namespace: str, name: str, uid: str) -> None: ...


@dataclass
class TrainingMemory:
    #: Pod uids already counted or deleted by us.
    handled: set[str] = field(default_factory=set)
    #: Job uid -> {pod uid: pod name} at the last pass.
    seen: dict[str, dict[str, str]] = field(default_factory=dict)


class TrainingController:
    def __init__(
        self,
        actuator: Actuator,
        placement: Placement | None = None,
        signals: InterruptionSignals | None = None,
    ) -> None:
        self._actuator = actuator
        self.placement = placement or Placement()
        self._signals = signals or InterruptionSignals()
        self.memory = TrainingMemory()
        self._lock = threading.Lock()

    def reconcile(
        self,
        job: TrainingJob,
        pods: Sequence[Body],
        nodes: Mapping[str, Body],
        now: datetime,
    ) -> PassResult:
        """One pass for `job`, given its worker pods and every node (from the caches)."""
        with self._lock:
            return self._pass(job, pods, nodes, now)

    def _workers(
        self, job: TrainingJob, pods: Sequence[Body], nodes: Mapping[str, Body]
    ) -> tuple[list[Worker], dict[str, str]]:
        workers: list[Worker] = []
        uids: dict[str, str] = {}
        for pod in pods:
            meta = pod.get("metadata") or {}
            uid, name = str(meta.get("uid", "")), str(meta.get("name", ""))
            uids[name] = uid
            node_name = (pod.get("spec") or {}).get("nodeName")
            body = nodes.get(node_name) if node_name else None
            facts = node_from_body(body, (), self._signals) if body is not None else None
            gone = bool(node_name) and body is None
            workers.append(
                worker_from_body(pod, facts, gone_node=gone, deleting=uid in self.memory.handled)
            )
        present = set(uids.values())
        for uid, name in self.memory.seen.get(job.metadata.uid, {}).items():
            if uid not in present and uid not in self.memory.handled:
                index = name.rsplit("-", 1)[-1]
                workers.append(
                    Worker(
                        int(index) if index.isdigit() else -1,
                        name,
                        "Failed",
                        node_lost=f"pod {name} was deleted (evicted, or its node drained)",
                    )
                )
                uids.setdefault(name, uid)
        return workers, uids

    def _pass(
        self, job: TrainingJob, pods: Sequence[Body], nodes: Mapping[str, Body], now: datetime
    ) -> PassResult:
        namespace = job.metadata.namespace
        if job.status.finished:
            return PassResult({})
        workers, uids = self._workers(job, pods, nodes)
        decision = decide_workers(job, workers, now)
        # Every worker the decision counted is among these: deleted, and never counted again.
        for name in decision.delete:
            uid = uids.get(name)
            if uid is not None:
                self._actuator.delete_pod(namespace, name, uid)
                self.memory.handled.add(uid)
        if decision.create:
            self._actuator.apply_service(service_manifest(job))
            interval = None
            if job.spec.checkpoint is not None and not job.spec.checkpoint.interval_auto:
                interval = job.spec.checkpoint.interval
            for index in decision.create:
                self._actuator.create_pod(worker_manifest(job, index, self.placement, interval))
        self.memory.seen[job.metadata.uid] = {
            uid: name for name, uid in uids.items() if uid not in self.memory.handled
        }
        if decision.finished:
            self.memory.seen.pop(job.metadata.uid, None)
        return PassResult(self._status(job, decision, now), _events(decision))

    def _status(self, job: TrainingJob, decision: WorkerDecision, now: datetime) -> dict[str, Any]:
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
        if status.start_time is None and decision.phase == "Running":
            out["startTime"] = rfc3339(now)
        if decision.finished:
            out["completionTime"] = rfc3339(now)
        return out

    def forget(self, job_uid: str) -> None:
        """The job is gone: drop what was remembered about it."""
        with self._lock:
            self.memory.seen.pop(job_uid, None)


def _events(decision: WorkerDecision) -> tuple[Event, ...]:
    return tuple(Event(kind, reason, message) for kind, reason, message in decision.events)
