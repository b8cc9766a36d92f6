"""How many of a TrainingJob's workers the cluster could ever hold, and what the job's plan
does with it: no more workers than that, a bounded number per pass, Unschedulable (with every
pool and why) when fewer than workers.min fit, and a decision whose memory stays bounded
whatever `workers.max` says."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from datetime import timedelta

from tests.unit.test_capacity import pool
from tests.unit.test_training_controller import NOW, job, pod
from tests.unit.test_training_plan import decide, observe

from sparsam.api.common import SpotPolicy
from sparsam.api.trainingjob import TrainingJob
from sparsam.decisions.cluster import CapacityRules, Node, Pod, Resources
from sparsam.decisions.reach import LIMITLESS, Reach, pod_reach
from sparsam.decisions.scheduling import Toleration
from sparsam.decisions.training import CREATE_PER_PASS
from sparsam.decisions.training_plan import TrainingObserved


def worker(gpus: int = 1, spot: SpotPolicy = "Prefer") -> Pod:
    return Pod(
        "tj-worker-0",
        "ml",
        Resources.of(gpus, "2", "8Gi"),
        tolerations=(Toleration(operator="Exists"),),
        spot=spot,
    )


def test_a_pool_holds_max_nodes_times_the_workers_one_node_takes() -> None:
    reach = pod_reach(worker(2), [pool("a", gpus=4, max_nodes=3)], [], CapacityRules())
    assert reach == Reach(6, holders=(("a", 6),))


def test_matching_pools_add_up_and_pools_that_cannot_hold_it_say_why() -> None:
    pools = [
        pool("a", gpus=8, max_nodes=2),
        pool("b", gpus=4, max_nodes=5),
        pool("off", gpus=8, max_nodes=0),
        pool("small", gpus=1, max_nodes=100),
    ]
    reach = pod_reach(worker(4), pools, [], CapacityRules())
    assert reach.pods == 2 * 2 + 5 * 1
    assert reach.why() == (
        "pool a holds at most 4; pool b holds at most 5; pool off is disabled (maxNodes 0); "
        "pool small has nodes with 1 GPU, the pod needs 4 GPUs"
    )
    assert dict(reach.refusals) == {
        "off": "is disabled (maxNodes 0)",
        "small": "has nodes with 1 GPU, the pod needs 4 GPUs",
    }


def test_no_pool_can_hold_a_64_gpu_worker_and_each_says_why() -> None:
    pools = [pool("a", gpus=8), pool("b", "on-demand", gpus=4)]
    reach = pod_reach(worker(64), pools, [], CapacityRules())
    assert reach.pods == 0
    assert reach.why() == (
        "incompatible with all node pools: "
        "pool a has nodes with 8 GPUs, the pod needs 64 GPUs; "
        "pool b has nodes with 4 GPUs, the pod needs 64 GPUs"
    )


def test_a_gpu_type_whose_only_pool_is_disabled_cannot_be_held() -> None:
    pools = [pool("h100", gpu="NVIDIA-H100", max_nodes=0), pool("l4", gpu="NVIDIA-L4")]
    rules = CapacityRules(allowed_gpu_types=frozenset({"NVIDIA-H100"}))
    reach = pod_reach(worker(1), pools, [], rules)
    assert reach.pods == 0
    assert "pool h100 is disabled (maxNodes 0)" in reach.why()
    assert "pool l4 has GPU type NVIDIA-L4, not in allowedGPUTypes (NVIDIA-H100)" in reach.why()


def test_without_pools_the_nodes_that_exist_hold_what_fits_them() -> None:
    nodes = [
        Node("n1", None, Resources.of(8, "64", "256Gi"), NOW),
        Node("n2", None, Resources.of(0, "64", "256Gi"), NOW),  # no GPUs
        Node("n3", "a", Resources.of(8, "64", "256Gi"), NOW),  # counted by pool a
    ]
    # n3's pool is not known: its node holds what fits it, as n1 does.
    assert pod_reach(worker(2), [], nodes, CapacityRules()).pods == 8
    assert pod_reach(worker(2), [pool("a", gpus=8, max_nodes=3)], nodes, CapacityRules()).pods == 16
    assert pod_reach(worker(2), [], [], CapacityRules()).why() == (
        "no GPUNodePool and no node can hold it"
    )


def test_reach_is_bounded_whatever_the_pools_say() -> None:
    huge = pool("a", gpus=8, max_nodes=10**12)
    assert pod_reach(worker(0), [huge, huge], [], CapacityRules()).pods == LIMITLESS


def big_job(maximum: int, least: int = 1) -> TrainingJob:
    """A job whose workers.max may lie beyond what the CRD and the parser admit: the decision
    must stay bounded whatever its input, so the model is built past the parser."""
    parsed = job(workers=min(maximum, 1000), least=least)
    workers = replace(parsed.spec.workers, max=maximum)
    return replace(parsed, spec=replace(parsed.spec, workers=workers))


def test_a_job_creates_only_the_workers_its_pools_could_ever_hold() -> None:
    plan = decide(replace_reach(observe(big_job(300)), Reach(1)))
    assert plan.create == (0,)
    status = plan.status
    assert status["phase"] == "Pending" and status["workers"]["desired"] == 300
    running = decide(replace_reach(observe(big_job(300), [pod(0)]), Reach(1)))
    assert running.create == () and running.status["phase"] == "Running"
    ready = {c["type"]: c for c in running.status["conditions"]}["Ready"]
    assert ready["message"] == "1 of 300 workers running (the cluster could hold at most 1)"


def test_waiting_workers_beyond_what_the_pools_hold_are_removed_running_ones_kept() -> None:
    pods = [pod(0), pod(1), pod(2, node="", phase="Pending")]
    pods[2]["spec"] = {}
    plan = decide(replace_reach(observe(big_job(3), pods), Reach(1)))
    assert [d.name for d in plan.delete] == ["tj-worker-2"]


def test_creation_per_pass_is_bounded_and_goes_on_next_pass() -> None:
    plan = decide(observe(big_job(300)))
    assert plan.create == tuple(range(CREATE_PER_PASS))
    waiting = [pod(i, phase="Pending") for i in plan.create]
    again = decide(observe(big_job(300), waiting), now=NOW + timedelta(seconds=5))
    assert again.create == tuple(range(CREATE_PER_PASS, 2 * CREATE_PER_PASS))


def test_a_job_no_pool_can_ever_hold_is_unschedulable_and_says_why() -> None:
    reach = Reach(0, (("a", "has nodes with 8 GPUs, the pod needs 64 GPUs"),))
    plan = decide(replace_reach(observe(big_job(2, least=2)), reach))
    assert plan.create == () and plan.status["phase"] == "Pending"
    ready = {c["type"]: c for c in plan.status["conditions"]}["Ready"]
    assert ready["reason"] == "Unschedulable"
    assert ready["message"] == (
        "workers.min is 2, the cluster could hold at most 0 such workers: incompatible with "
        "all node pools: pool a has nodes with 8 GPUs, the pod needs 64 GPUs"
    )
    assert plan.events == (("Warning", "Unschedulable", ready["message"]),)
    # Fewer than min fit: unschedulable too, and the two that would fit are not created to
    # hold GPUs with nothing to train.
    short = decide(replace_reach(observe(big_job(4, least=3)), Reach(2)))
    assert short.create == ()
    ready = {c["type"]: c for c in short.status["conditions"]}["Ready"]
    assert ready["reason"] == "Unschedulable"


def test_the_decision_stays_small_whatever_workers_max_says() -> None:
    # workers.max far beyond any CRD bound, no pool known and one that holds "everything":
    # a pass plans a bounded number of creations and allocates little either way.
    for reach in (None, Reach(LIMITLESS)):
        tracemalloc.start()
        plan = decide(replace_reach(observe(big_job(2**31 - 1)), reach))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(plan.create) == CREATE_PER_PASS
        assert peak < 2 * 2**20, f"{peak} bytes"


def replace_reach(observed: TrainingObserved, reach: Reach | None) -> TrainingObserved:
    return replace(observed, reach=reach)
