"""One pass of the GPUNodePool controller, on the programmable fake provider and a fake drainer:
what it adds, cordons, evicts, deletes and uncordons, and the status and Events it reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sparsam.api.gpunodepool import GPUNodePool
from sparsam.controllers.capacity import CapacityController, Snapshot
from sparsam.controllers.results import PassResult
from sparsam.decisions.cluster import Pod, Resources
from sparsam.decisions.scheduling import Toleration
from sparsam.kube.drain import EvictionResult
from sparsam.kube.errors import ApiRefused
from sparsam.providers.fake import FakeNodePoolProvider, Method
from sparsam.providers.kwok import node_manifest
from sparsam.providers.nodepool import InsufficientCapacity, NotFound, ProviderError, Transient

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TOLERATE_ALL = (Toleration(operator="Exists"),)


def gpupool(name: str, capacity: str = "spot", **spec: Any) -> GPUNodePool:
    return GPUNodePool.from_body(
        {
            "metadata": {"name": name, "generation": 1},
            "spec": {
                "provider": {"kwok": {}},
                "nodeTemplate": {"gpuType": "A10G", "gpusPerNode": 4, "cpu": 48, "memory": "192Gi"},
                "capacityType": capacity,
                "pricePerHour": 2.0 if capacity == "spot" else 6.0,
                "maxNodes": 4,
                "scaleDownAfter": "5m",
                **spec,
            },
        }
    )


def gpu_pod(name: str, gpus: int = 4) -> Pod:
    return Pod(name, "team", Resources(gpus, 1000, 2**30), tolerations=TOLERATE_ALL)


def node_body(pool: GPUNodePool, name: str, **extra: Any) -> dict[str, Any]:
    body = node_manifest(pool, name)
    body["metadata"]["creationTimestamp"] = "2026-11-22T10:00:00Z"
    body["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    for key, value in extra.items():
        body.setdefault(key, {}).update(value)
    return body


@dataclass
class FakeDrainer:
    """Records what the controller does to nodes; `live` is what the apiserver would list."""

    live: dict[str, list[Pod]] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def cordon(self, node: str, reason: str) -> None:
        self.calls.append(("cordon", node))

    def uncordon(self, node: str) -> None:
        self.calls.append(("uncordon", node))

    def evict(self, namespace: str, name: str) -> EvictionResult:
        self.calls.append(("evict", name))
        if name in self.refused:
            raise ApiRefused(f"evicting pod {namespace}/{name}: 500 Internal Server Error")
        return "blocked" if name in self.blocked else "evicted"

    def pods_on_node(self, node: str) -> Sequence[Pod]:
        return self.live.get(node, [])


def controller() -> tuple[CapacityController, FakeNodePoolProvider, FakeDrainer]:
    fake, drainer = FakeNodePoolProvider(), FakeDrainer()
    return CapacityController(lambda _pool: fake, drainer), fake, drainer


def snapshot(
    pools: Sequence[GPUNodePool],
    nodes: Sequence[dict[str, Any]] = (),
    bound: dict[str, Sequence[Pod]] | None = None,
    pending: Sequence[Pod] = (),
) -> Snapshot:
    return Snapshot(
        pools={p.metadata.name: p for p in pools},
        nodes={n["metadata"]["name"]: n for n in nodes},
        bound=bound or {},
        pending=pending,
    )


def events(result: PassResult) -> list[str]:
    return [f"{e.reason}: {e.message}" for e in result.events]


def ready(result: PassResult) -> tuple[str, str]:
    (cond,) = [c for c in result.status["conditions"] if c["type"] == "Ready"]
    return cond["status"], cond["reason"]


def test_pending_pods_add_nodes_once_even_before_the_cache_shows_them() -> None:
    ctl, fake, _ = controller()
    spot = gpupool("spot")
    snap = snapshot([spot], pending=[gpu_pod("a"), gpu_pod("b")])

    first = ctl.reconcile_pool("spot", snap, NOW)
    assert len(fake.nodes["spot"]) == 2
    assert first.status["lastAction"]["type"] == "ScaleUp"
    assert first.status["desiredNodes"] == 2 and first.status["nodes"] == 0
    # The same cache again (the new nodes not in it yet): the nodes asked for count.
    ctl.reconcile_pool("spot", snap, NOW + timedelta(seconds=1))
    assert len(fake.nodes["spot"]) == 2
    # The pods are nominated to the new nodes by name.
    assert set(ctl.memory.nominations.values()) == set(fake.nodes["spot"])


def test_insufficient_capacity_marks_the_offering_and_on_demand_takes_the_pods() -> None:
    ctl, fake, _ = controller()
    spot, on_demand = gpupool("spot"), gpupool("od", "on-demand")
    fake.fail("scale_up", InsufficientCapacity, pool="spot")
    snap = snapshot([spot, on_demand], pending=[gpu_pod("a")])

    result = ctl.reconcile_pool("spot", snap, NOW)
    assert ready(result) == ("False", "InsufficientCapacity")
    assert any(e.startswith("InsufficientCapacity") for e in events(result))
    assert ctl.memory.offerings["spot"].unavailable_until == NOW + timedelta(minutes=3)

    ctl.reconcile_pool("od", snap, NOW + timedelta(seconds=1))
    assert len(fake.nodes["od"]) == 1 and not fake.nodes.get("spot")
    # Still unavailable on the next pass, which asks the provider nothing.
    again = ctl.reconcile_pool("spot", snap, NOW + timedelta(seconds=2))
    assert ready(again) == ("False", "InsufficientCapacity")
    assert [call.method for call in fake.calls if call.pool == "spot"] == [
        "scale_up",
        "size",
        "size",
    ]


@pytest.mark.parametrize(
    ("method", "error", "outcome"),
    [
        ("scale_up", ProviderError, ("False", "ProviderError")),
        ("scale_up", NotFound, ("False", "ProviderError")),
        ("size", ProviderError, ("False", "ProviderError")),
        ("scale_up", Transient, None),
        ("size", Transient, None),
    ],
    ids=[
        "provider-error-in-status",
        "missing-machinedeployment-in-status",
        "size-error-in-status",
        "transient-raised-for-retry",
        "transient-size-raised-for-retry",
    ],
)
def test_provider_errors(
    method: Method, error: type[ProviderError], outcome: tuple[str, str] | None
) -> None:
    ctl, fake, _ = controller()
    fake.fail(method, error)
    snap = snapshot([gpupool("spot")], pending=[gpu_pod("a")])
    if outcome is None:
        with pytest.raises(error):
            ctl.reconcile_pool("spot", snap, NOW)
    else:
        assert ready(ctl.reconcile_pool("spot", snap, NOW)) == outcome


def test_an_empty_node_is_cordoned_and_removed_after_scale_down_after() -> None:
    ctl, fake, drainer = controller()
    spot = gpupool("spot")
    fake.nodes["spot"] = ["spot-1"]
    snap = snapshot([spot], [node_body(spot, "spot-1")])

    early = ctl.reconcile_pool("spot", snap, NOW)  # first seen empty now
    assert drainer.calls == [] and fake.nodes["spot"] == ["spot-1"]
    assert early.status["nodes"] == 1 and early.status["utilization"] == 0.0

    later = ctl.reconcile_pool("spot", snap, NOW + timedelta(minutes=6))
    assert drainer.calls == [("cordon", "spot-1")]
    assert fake.nodes["spot"] == []
    assert later.status["lastAction"]["type"] == "ScaleDown"
    assert later.status["lastAction"]["reason"].startswith("removed node spot-1: empty for 6m")


def test_a_drain_replans_when_a_pod_arrived_after_the_cache() -> None:
    ctl, fake, drainer = controller()
    spot = gpupool("spot")
    fake.nodes["spot"] = ["spot-1"]
    ctl.memory.empty_since["spot-1"] = NOW - timedelta(hours=1)
    # The cache says empty; the apiserver lists a pod that arrived since.
    drainer.live["spot-1"] = [gpu_pod("newcomer", 0)]
    ctl.reconcile_pool("spot", snapshot([spot], [node_body(spot, "spot-1")]), NOW)
    assert drainer.calls == [("cordon", "spot-1")]  # no eviction, no removal
    assert fake.nodes["spot"] == ["spot-1"]


def test_a_blocked_eviction_keeps_the_node_and_says_why() -> None:
    ctl, fake, drainer = controller()
    spot = gpupool("spot", maxNodes=1)
    fake.nodes["spot"] = ["doomed"]
    guarded = gpu_pod("guarded")
    body = node_body(spot, "doomed")
    body["spec"]["taints"].append({"key": "karpenter.sh/disrupted", "effect": "NoSchedule"})
    drainer.live["doomed"] = [guarded]
    drainer.blocked.add("guarded")
    snap = snapshot([spot], [body], bound={"doomed": [guarded]})
    result = ctl.reconcile_pool("spot", snap, NOW)
    assert ("evict", "guarded") in drainer.calls
    assert fake.nodes["spot"] == ["doomed"]
    said = "EvictionBlocked: node doomed: 1 pod(s) wait for a PodDisruptionBudget"
    assert said in events(result)
    # Still blocked at the next passes: tried again, said again only after ten minutes.
    later = [NOW + timedelta(seconds=s) for s in (10, 20, 599)]
    quiet = [events(ctl.reconcile_pool("spot", snap, t)) for t in later]
    assert all(said not in e for e in quiet)
    # Nor the provider's refusal of a replacement at maxNodes, found on every pass too.
    assert not [line for e in quiet for line in e if line.startswith("ProviderError")]
    assert drainer.calls.count(("evict", "guarded")) == 4
    # Counted meanwhile, as a Kubernetes event series counts its repeats.
    again = events(ctl.reconcile_pool("spot", snap, NOW + timedelta(minutes=10)))
    assert f"{said} (repeated 3 times since 12:00:00)" in again
    # A second blocked pod changes the message: said at once.
    other = gpu_pod("other")
    drainer.live["doomed"] = [guarded, other]
    drainer.blocked.add("other")
    snap = snapshot([spot], [body], bound={"doomed": [guarded, other]})
    result = ctl.reconcile_pool("spot", snap, NOW + timedelta(minutes=10, seconds=10))
    assert "EvictionBlocked: node doomed: 2 pod(s) wait for a PodDisruptionBudget" in events(result)


def test_our_cordon_is_lifted_when_the_node_is_needed_and_an_admins_is_not() -> None:
    ctl, fake, drainer = controller()
    spot = gpupool("spot")
    fake.nodes["spot"] = ["ours", "admins"]
    busy = gpu_pod("busy")
    nodes = [
        node_body(
            spot,
            "ours",
            metadata={"annotations": {"sparsam.dev/draining": "ScaleDown"}},
            spec={"unschedulable": True},
        ),
        node_body(spot, "admins", spec={"unschedulable": True}),
    ]
    snap = snapshot([spot], nodes, bound={"ours": [busy], "admins": [gpu_pod("other")]})
    result = ctl.reconcile_pool("spot", snap, NOW)
    assert drainer.calls == [("uncordon", "ours")]
    assert "Uncordoned: node ours is needed again" in events(result)


def test_an_interruption_drains_the_node_and_adds_a_replacement_in_the_same_pass() -> None:
    ctl, fake, drainer = controller()
    spot = gpupool("spot")
    fake.nodes["spot"] = ["doomed"]
    worker = gpu_pod("worker")
    taint = {"key": "aws-node-termination-handler/spot-itn", "effect": "NoSchedule"}
    body = node_body(spot, "doomed")
    body["spec"]["taints"].append(taint)
    drainer.live["doomed"] = [worker]
    result = ctl.reconcile_pool("spot", snapshot([spot], [body], bound={"doomed": [worker]}), NOW)

    assert ("cordon", "doomed") in drainer.calls and ("evict", "worker") in drainer.calls
    assert len(fake.nodes["spot"]) == 2  # the replacement, while the pod is still evicted
    assert any(e.startswith("ScaleUp") for e in events(result))

    drainer.live["doomed"] = []  # evicted
    ctl.reconcile_pool("spot", snapshot([spot], [body]), NOW + timedelta(seconds=5))
    assert "doomed" not in fake.nodes["spot"]


def test_a_refused_drain_step_is_reported_and_retried_not_raised() -> None:
    ctl, fake, drainer = controller()
    spot = gpupool("spot")
    fake.nodes["spot"] = ["doomed"]
    body = node_body(spot, "doomed")
    body["spec"]["taints"].append({"key": "karpenter.sh/disrupted", "effect": "NoSchedule"})
    pod = gpu_pod("p")
    drainer.live["doomed"] = [pod]
    drainer.refused.add("p")
    result = ctl.reconcile_pool("spot", snapshot([spot], [body], bound={"doomed": [pod]}), NOW)
    assert "DrainFailed: node doomed: evicting pod team/p: 500 Internal Server Error" in events(
        result
    )
    assert "doomed" in fake.nodes["spot"]
