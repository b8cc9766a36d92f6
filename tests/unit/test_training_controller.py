"""One pass of the TrainingJob controller on a fake actuator: how it carries its plan out
(the order of counts, deletions and creations, slow start, what it remembers between passes,
the manifests it builds, the cost it meters). What the plan is: test_training_plan.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sparsam.api.costpolicy import CostPolicy
from sparsam.api.trainingjob import TrainingJob
from sparsam.controllers.checkpoints import CheckpointReader
from sparsam.controllers.training import TrainingController, slow_start
from sparsam.decisions.cost import PriceTable
from sparsam.kube.errors import ApiRefused

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@dataclass
class FakeActuator:
    created: list[str] = field(default_factory=list)
    manifests: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)
    services: int = 0
    services_applied: list[dict[str, Any]] = field(default_factory=list)
    #: Status writes of the pass itself, "delete <pod>" and "create <pod>", in the order
    #: they happened.
    writes: list[dict[str, Any]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.writes.append(status)
        self.order.append("status")

    def apply_inference_service(self, manifest: dict[str, Any]) -> None:
        self.services_applied.append(manifest)

    def apply_service(self, manifest: dict[str, Any]) -> None:
        self.services += 1

    def create_pod(self, manifest: dict[str, Any]) -> bool:
        self.created.append(manifest["metadata"]["name"])
        self.order.append(f"create {manifest['metadata']['name']}")
        self.manifests.append(manifest)
        return True

    def delete_pod(self, namespace: str, name: str, uid: str, force: bool = False) -> None:
        self.deleted.append(name)
        self.order.append(f"delete {name}")
        if force:
            self.forced.append(name)

    def delete_job(self, namespace: str, name: str, uid: str) -> None:
        self.deleted.append(f"trainingjob/{name}")

    def annotate_job(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self.annotations.update(annotations)
        self.order.append("annotate")


def job(
    status: dict[str, Any] | None = None,
    workers: int | None = None,
    least: int | None = None,
    **spec: Any,
) -> TrainingJob:
    """min 1, max 2; or `workers` of them, at least `least` (default all) to start; `spec`
    adds fields."""
    return TrainingJob.from_body(
        {
            "metadata": {"name": "tj", "namespace": "ml", "uid": "job-uid", "generation": 3},
            "spec": {
                "image": "t:1",
                "workers": {"min": 1, "max": 2}
                if workers is None
                else {"min": least or workers, "max": workers},
                **spec,
            },
            "status": status or {},
        }
    )


def pod(index: int, node: str = "n1", phase: str = "Running", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"tj-worker-{index}",
            "uid": f"pod-{index}",
            "labels": {"sparsam.dev/worker-index": str(index)},
        },
        "spec": {"nodeName": node},
        "status": {"phase": phase, **status},
    }


NODE = {
    "metadata": {"name": "n1", "creationTimestamp": "2026-11-22T10:00:00Z"},
    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
}


def controller() -> tuple[TrainingController, FakeActuator]:
    actuator = FakeActuator()
    return TrainingController(actuator), actuator


def test_a_new_job_gets_its_service_and_workers_and_a_status() -> None:
    ctl, act = controller()
    result = ctl.reconcile(job(), [], {"n1": NODE}, NOW)
    assert act.services == 1 and act.created == ["tj-worker-0", "tj-worker-1"]
    assert result.status["phase"] == "Pending"
    assert result.status["selector"] == "sparsam.dev/job=tj,sparsam.dev/role=worker"
    assert result.status["observedGeneration"] == 3
    assert "startTime" not in result.status

    running = ctl.reconcile(job(), [pod(0), pod(1)], {"n1": NODE}, NOW)
    assert running.status["phase"] == "Running" and running.status["startTime"]
    assert running.status["workers"] == {"desired": 2, "running": 2}
    assert act.created == ["tj-worker-0", "tj-worker-1"]  # nothing more


@pytest.mark.parametrize(
    ("count", "first", "sizes"),
    [
        (0, 1, []),
        (1, 1, [1]),
        (2, 1, [1, 1]),
        (3, 1, [1, 2]),
        (4, 1, [1, 2, 1]),
        (7, 1, [1, 2, 4]),
        (9, 1, [1, 2, 4, 2]),
        (1, 2, [1]),
        (2, 2, [2]),
        (4, 2, [2, 2]),
        (9, 2, [2, 4, 3]),
        (9, 0, [1, 2, 4, 2]),
    ],
)
def test_slow_start_doubles_its_batches(count: int, first: int, sizes: list[int]) -> None:
    batches = slow_start(list(range(count)), first)
    assert [len(b) for b in batches] == sizes
    assert [i for b in batches for i in b] == list(range(count))


def test_a_refused_first_batch_stops_the_creation_before_the_next() -> None:
    @dataclass
    class Refusing(FakeActuator):
        def create_pod(self, manifest: dict[str, Any]) -> bool:
            super().create_pod(manifest)
            raise ApiRefused("creating pod: exceeded quota")

    actuator = Refusing()
    with pytest.raises(ApiRefused, match="exceeded quota"):
        TrainingController(actuator).reconcile(job(workers=8, least=2), [], {"n1": NODE}, NOW)
    # The Service and the two the job needs to start went at once; no worker after the
    # refusal was tried.
    assert actuator.services == 1 and actuator.created == ["tj-worker-0", "tj-worker-1"]


def test_every_worker_of_a_wide_job_is_created_once() -> None:
    ctl, act = controller()
    ctl.reconcile(job(workers=9), [], {"n1": NODE}, NOW)
    assert act.services == 1
    assert sorted(act.created) == sorted(f"tj-worker-{i}" for i in range(9))


def test_workers_the_cache_does_not_show_yet_are_not_created_again() -> None:
    ctl, act = controller()
    ctl.reconcile(job(), [], {"n1": NODE}, NOW)
    # The watch lags the creates: the next passes see no pods, and post nothing again.
    for seconds in (5, 30, 55):
        ctl.reconcile(job(), [], {"n1": NODE}, NOW + timedelta(seconds=seconds))
    assert act.services == 1 and act.created == ["tj-worker-0", "tj-worker-1"]
    # Past CREATE_PATIENCE they are taken for lost (e.g. deleted before the cache saw them).
    ctl.reconcile(job(), [pod(0)], {"n1": NODE}, NOW + timedelta(seconds=61))
    assert act.services == 2 and act.created[2:] == ["tj-worker-1"]


def test_a_worker_the_cache_showed_is_replaced_at_once_when_it_vanishes() -> None:
    ctl, act = controller()
    ctl.reconcile(job(), [], {"n1": NODE}, NOW)
    first = ctl.reconcile(job(), [pod(0), pod(1)], {"n1": NODE}, NOW + timedelta(seconds=5))
    ctl.reconcile(job(first.status), [pod(0)], {"n1": NODE}, NOW + timedelta(seconds=10))
    assert act.created == ["tj-worker-0", "tj-worker-1", "tj-worker-1"]


def test_a_count_is_made_durable_before_the_pod_it_counts_is_deleted() -> None:
    ctl, act = controller()
    failed = pod(1, phase="Failed", containerStatuses=[{"state": {"terminated": {"exitCode": 1}}}])
    first = ctl.reconcile(job(), [pod(0), failed], {"n1": NODE}, NOW)
    assert act.order[:2] == ["status", "delete tj-worker-1"]
    assert act.writes == [
        {
            "preemptions": 0,
            "restarts": 1,
            "countedPods": ["pod-1"],
            "workerPods": [{"name": "tj-worker-0", "uid": "pod-0"}],
        }
    ]
    assert first.status["countedPods"] == ["pod-1"]


def test_a_worker_whose_pod_vanished_between_passes_is_a_preemption() -> None:
    ctl, act = controller()
    first = ctl.reconcile(job(), [pod(0), pod(1)], {"n1": NODE}, NOW)
    # Evicted by a drain and gone before the next pass saw it terminating.
    act.order.clear()
    second = ctl.reconcile(job(first.status), [pod(0)], {"n1": NODE}, NOW + timedelta(seconds=5))
    assert second.status["preemptions"] == 1
    # The count is durable before its replacement exists: nobody sees the one without the other.
    assert act.order == ["status", "create tj-worker-1"]
    assert act.writes[-1]["preemptions"] == 1
    assert act.writes[-1]["workerPods"] == [{"name": "tj-worker-0", "uid": "pod-0"}]
    assert [e.reason for e in second.events] == ["WorkerPreempted"]
    third = ctl.reconcile(job(second.status), [pod(0)], {"n1": NODE}, NOW + timedelta(seconds=9))
    assert third.status["preemptions"] == 1


POOL = {"spec": {"pricePerHour": 3.6, "nodeTemplate": {"gpusPerNode": 1}}}
SPOT_NODE = {
    "metadata": {
        "name": "n1",
        "creationTimestamp": "2026-11-22T10:00:00Z",
        "labels": {"sparsam.dev/pool": "p", "karpenter.sh/capacity-type": "spot"},
    },
    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
}


def priced_job(status: dict[str, Any] | None = None, **spec: Any) -> TrainingJob:
    return TrainingJob.from_body(
        {
            "metadata": {"name": "tj", "namespace": "ml", "uid": "job-uid", "generation": 1},
            "spec": {"image": "t:1", "workers": {"min": 1, "max": 1}, **spec},
            "status": status or {},
        }
    )


def test_cost_accrues_at_the_pool_price_and_is_written_at_most_every_30s() -> None:
    ctl, _ = controller()
    nodes, pools = {"n1": SPOT_NODE}, {"p": POOL}
    first = ctl.reconcile(priced_job(), [pod(0)], nodes, NOW, pools)
    assert first.status["cost"] == {"accrued": 0.0, "onDemandEquivalent": 0.0, "gpuSeconds": 0.0}
    later = ctl.reconcile(
        priced_job(first.status), [pod(0)], nodes, NOW + timedelta(seconds=10), pools
    )
    assert "cost" not in later.status  # changed, but written 10 s ago
    much = ctl.reconcile(
        priced_job(first.status), [pod(0)], nodes, NOW + timedelta(seconds=100), pools
    )
    # 100 GPU-seconds at 3.6 per GPU-hour; no on-demand price is known for the spot GPUs, so
    # there is no on-demand equivalent (missing data is not zero).
    assert much.status["cost"] == {"accrued": 0.1, "gpuSeconds": 100.0}


def test_savings_against_the_on_demand_price() -> None:
    actuator = FakeActuator()
    ctl = TrainingController(actuator, prices=PriceTable({("*", "on-demand"): 7.2}))
    nodes, pools = {"n1": SPOT_NODE}, {"p": POOL}
    ctl.reconcile(priced_job(), [pod(0)], nodes, NOW, pools)
    result = ctl.reconcile(priced_job(), [pod(0)], nodes, NOW + timedelta(seconds=100), pools)
    assert result.status["cost"] == {
        "accrued": 0.1,
        "onDemandEquivalent": 0.2,
        "savingsRatio": 0.5,
        "gpuSeconds": 100.0,
    }


@pytest.mark.parametrize(
    ("on_exceeded", "phase", "deleted"),
    [
        ("Alert", "Running", []),
        ("Suspend", "Suspended", ["tj-worker-0"]),
        ("Fail", "Failed", ["tj-worker-0"]),
    ],
    ids=["alert", "suspend", "fail"],
)
def test_a_spent_budget(on_exceeded: str, phase: str, deleted: list[str]) -> None:
    ctl, act = controller()
    job_ = priced_job(budget={"maxCost": 0.05, "onExceeded": on_exceeded})
    nodes, pools = {"n1": SPOT_NODE}, {"p": POOL}
    ctl.reconcile(job_, [pod(0)], nodes, NOW, pools)
    result = ctl.reconcile(job_, [pod(0)], nodes, NOW + timedelta(seconds=60), pools)
    assert result.status["phase"] == phase
    assert act.deleted == deleted
    assert result.events[0].reason == "BudgetExceeded"
    assert "0.06 of spec.budget.maxCost 0.05" in result.events[0].message
    if on_exceeded == "Alert":  # posted once, and the job keeps running
        again = ctl.reconcile(job_, [pod(0)], nodes, NOW + timedelta(seconds=61), pools)
        assert [e.reason for e in again.events] == []


@dataclass
class RecordingActuator(FakeActuator):
    manifests: list[dict[str, Any]] = field(default_factory=list)

    def create_pod(self, manifest: dict[str, Any]) -> bool:
        self.manifests.append(manifest)
        return super().create_pod(manifest)


def env_of(manifest: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in manifest["spec"]["containers"][0]["env"]}


def costpolicy(**spec: Any) -> CostPolicy:
    return CostPolicy.from_body(
        {"metadata": {"name": "team"}, "spec": {"namespaceSelector": {}, **spec}}
    )


@pytest.mark.parametrize(
    ("interval", "policy", "seconds", "mode"),
    [
        # Prior 0.01 preemptions per spot node-hour x 2 workers: MTBF 50 h; Young/Daly with
        # the default C = 60 s gives 77 min, clamped to the 1 h maximum.
        ("auto", None, 3600, "Auto"),
        # maxLostWorkFraction 0.01: tau <= 2 * (0.01 * 180000 s - 60 s) = 3480 s.
        ("auto", costpolicy(checkpoint={"maxLostWorkFraction": 0.01}), 3480, "Auto"),
        ("10m", None, 600, "Fixed"),
    ],
    ids=["auto-prior", "auto-bounded-by-policy", "fixed"],
)
def test_checkpoint_cadence_goes_to_status_and_to_new_workers(
    interval: str, policy: CostPolicy | None, seconds: int, mode: str
) -> None:
    actuator = RecordingActuator()
    ctl = TrainingController(actuator)
    job_ = TrainingJob.from_body(
        {
            "metadata": {"name": "tj", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": {
                "image": "t:1",
                "workers": {"min": 1, "max": 2},
                "checkpoint": {"volumeClaim": "ckpt", "interval": interval},
            },
        }
    )
    result = ctl.reconcile(job_, [], {}, NOW, None, policy)
    cadence = result.status["checkpointInterval"]
    assert (cadence["seconds"], cadence["mode"]) == (seconds, mode)
    assert "C=60s (default, not yet measured)" in cadence["message"]
    assert {env_of(m)["SPARSAM_CHECKPOINT_INTERVAL"] for m in actuator.manifests} == {f"{seconds}s"}


class FakeJobMetrics:
    """Prometheus answering `by_job` queries from fixed values, counting the queries."""

    def __init__(self, values: dict[str, dict[tuple[str, str], float]]) -> None:
        self.values, self.queries = values, 0

    def by_job(self, query: str) -> dict[tuple[str, str], float]:
        self.queries += 1
        return next((v for metric, v in self.values.items() if metric in query), {})


def test_the_measured_checkpoint_write_time_sets_the_cadence_and_status() -> None:
    at = NOW - timedelta(seconds=30)
    source = FakeJobMetrics(
        {
            "checkpoint_write_seconds": {("ml", "tj"): 12.0},
            "last_checkpoint_step": {("ml", "tj"): 400.0, ("ml", "other"): 9.0},
            "last_checkpoint_timestamp": {("ml", "tj"): at.timestamp()},
        }
    )
    actuator = RecordingActuator()
    ctl = TrainingController(actuator, checkpoints=CheckpointReader(source, 5.0))
    job_ = TrainingJob.from_body(
        {
            "metadata": {"name": "tj", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": {
                "image": "t:1",
                "workers": {"min": 1, "max": 2},
                "checkpoint": {"volumeClaim": "ckpt", "interval": "auto"},
            },
        }
    )
    result = ctl.reconcile(job_, [], {}, NOW)
    cadence = result.status["checkpointInterval"]
    assert cadence["writeSeconds"] == 12.0
    assert "C=12s," in cadence["message"] and "not yet measured" not in cadence["message"]
    # Young/Daly: sqrt(2 * 12 s * MTBF) is shorter than with the 60 s default.
    default = TrainingController(RecordingActuator()).reconcile(job_, [], {}, NOW)
    assert cadence["seconds"] < default.status["checkpointInterval"]["seconds"]
    assert result.status["lastCheckpoint"] == {"step": 400, "time": "2026-11-22T11:59:30Z"}
    assert "lastCheckpoint" not in default.status
    # One round of queries serves every job until the period is over.
    ctl.reconcile(job_, [], {}, NOW)
    assert source.queries == 3


def test_allowed_gpu_types_of_the_policy_reach_the_workers() -> None:
    actuator = RecordingActuator()
    ctl = TrainingController(actuator)
    ctl.reconcile(job(), [], {}, NOW, None, costpolicy(allowedGPUTypes=["NVIDIA-L4"]))
    affinity = actuator.manifests[0]["spec"]["affinity"]["nodeAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L4"]}
    ]


# -- after training: compress, then deploy ---------------------------------------------------


def delivering_job(
    status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None
) -> TrainingJob:
    """The job with `status`, and the `annotations` the operator wrote on it (its outcome)."""
    return TrainingJob.from_body(
        {
            "metadata": {
                "name": "tj",
                "namespace": "ml",
                "uid": "job-uid",
                "generation": 3,
                "annotations": dict(annotations or {}),
            },
            "spec": {
                "image": "t:1",
                "workers": {"min": 1, "max": 1},
                "checkpoint": {"volumeClaim": "ckpt", "path": "/ckpt"},
                "compression": {"quantization": {"mode": "dynamic"}, "maxAccuracyDrop": 0.02},
                "deploy": {"inferenceService": "clf", "minReplicas": 0, "maxReplicas": 2},
            },
            "status": status or {},
        }
    )


def compress_pod(exit_code: int | None, message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running"}
    if exit_code is not None:
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": exit_code, "message": message}}}
            ],
        }
    return {
        "metadata": {
            "name": "tj-compress",
            "uid": "c1",
            "labels": {"sparsam.dev/role": "compress"},
        },
        "spec": {"nodeName": "n1"},
        "status": status,
    }


REPORT = (
    '{"compression":{"sizeBytes":{"before":100,"after":25},"accuracy":{"before":0.9,'
    '"after":0.89},"latencyMs":{"before":4.0,"after":2.0},"accepted":true},"reason":"ok"}'
)


def test_a_succeeded_job_compresses_then_deploys_its_inference_service() -> None:
    ctl, act = controller()
    done = ctl.reconcile(delivering_job(), [pod(0, phase="Succeeded")], {"n1": NODE}, NOW)
    assert done.status["phase"] == "Compressing" and "completionTime" not in done.status
    assert act.created[-1] == "tj-compress"
    manifest = act.manifests[-1]
    (container,) = manifest["spec"]["containers"]
    assert container["command"][-2:] == [
        "--model=/ckpt/tj/model.pt",
        "--output-dir=/ckpt/tj/compressed",
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert '"quantization": {"mode": "dynamic"}' in env["SPARSAM_COMPRESSION"]
    assert manifest["metadata"]["labels"]["sparsam.dev/role"] == "compress"

    assert act.annotations["sparsam.dev/outcome"].startswith("Trained ")
    waiting = ctl.reconcile(
        delivering_job(done.status, act.annotations), [compress_pod(None)], {"n1": NODE}, NOW
    )
    assert waiting.status["phase"] == "Compressing" and act.services_applied == []

    ended = ctl.reconcile(
        delivering_job(waiting.status, act.annotations),
        [compress_pod(0, REPORT)],
        {"n1": NODE},
        NOW,
    )
    assert ended.status["phase"] == "Succeeded" and ended.status["completionTime"]
    assert act.annotations["sparsam.dev/outcome"].startswith("Succeeded ")
    assert ended.status["compression"]["sizeBytes"] == {"before": 100, "after": 25}
    uri = "pvc://ckpt/tj/compressed/model"
    assert ended.status["model"] == {"uri": uri}
    (service,) = act.services_applied
    assert service["metadata"]["name"] == "clf" and service["spec"]["model"]["uri"] == uri
    assert service["spec"]["replicas"] == {"min": 0, "max": 2}
    assert [e.reason for e in ended.events] == ["Deployed"]


def test_a_job_without_compression_exports_and_deploys_its_model_as_trained() -> None:
    ctl, act = controller()
    body = {
        "metadata": {"name": "tj", "namespace": "ml", "uid": "job-uid", "generation": 1},
        "spec": {
            "image": "t:1",
            "workers": {"min": 1, "max": 1},
            "checkpoint": {"volumeClaim": "ckpt", "path": "/ckpt"},
            "deploy": {"inferenceService": "clf"},
        },
    }
    done = ctl.reconcile(
        TrainingJob.from_body(body), [pod(0, phase="Succeeded")], {"n1": NODE}, NOW
    )
    assert done.status["phase"] == "Deploying"
    (container,) = act.manifests[-1]["spec"]["containers"]
    assert container["command"][-1] == "--output-dir=/ckpt/tj/exported"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert json.loads(env["SPARSAM_COMPRESSION"]) == {
        "maxAccuracyDrop": 0.0,
        "quantization": {"mode": "none"},
    }
    trained = {**body["metadata"], "annotations": act.annotations}
    ended = ctl.reconcile(
        TrainingJob.from_body({**body, "metadata": trained, "status": done.status}),
        [compress_pod(0, REPORT)],
        {"n1": NODE},
        NOW,
    )
    assert ended.status["phase"] == "Succeeded" and "compression" not in ended.status
    assert ended.status["model"] == {"uri": "pvc://ckpt/tj/exported/model"}
    (service,) = act.services_applied
    assert service["spec"]["model"]["uri"] == "pvc://ckpt/tj/exported/model"


def test_the_policys_accuracy_budget_caps_the_jobs() -> None:
    ctl, act = controller()
    policy = costpolicy(compression={"maxAccuracyDrop": 0.005})
    ctl.reconcile(delivering_job(), [pod(0, phase="Succeeded")], {"n1": NODE}, NOW, {}, policy)
    (container,) = act.manifests[-1]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert json.loads(env["SPARSAM_COMPRESSION"])["maxAccuracyDrop"] == 0.005  # job said 0.02


def test_a_worker_whose_node_is_gone_is_force_deleted_so_its_replacement_can_start() -> None:
    ctl, act = controller()
    first = ctl.reconcile(job(), [pod(0), pod(1, node="gone")], {"n1": NODE}, NOW)
    assert first.status["preemptions"] == 1
    assert act.deleted == ["tj-worker-1"] and act.forced == ["tj-worker-1"]


def test_an_unset_spot_takes_the_policys_default_and_status_says_so() -> None:
    actuator = RecordingActuator()
    ctl = TrainingController(actuator)
    result = ctl.reconcile(job(), [], {}, NOW, None, costpolicy(spot={"default": "Never"}))
    worker = actuator.manifests[0]
    assert worker["metadata"]["labels"]["sparsam.dev/spot"] == "Never"
    affinity = worker["spec"]["affinity"]["nodeAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "karpenter.sh/capacity-type", "operator": "NotIn", "values": ["spot"]} in term[
        "matchExpressions"
    ]
    assert result.status["spot"] == {
        "policy": "Never",
        "source": "CostPolicy",
        "message": "spot: Never (from CostPolicy team spot.default)",
    }
