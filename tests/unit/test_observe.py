"""Pods and Nodes as the apiserver sends them, read into the capacity planner's inputs."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from sparsam.decisions.cluster import Pod, Resources
from sparsam.decisions.interruption import InterruptionSignals
from sparsam.decisions.scheduling import NodeSelectorRequirement, NodeSelectorTerm, Toleration
from sparsam.kube.errors import refused
from sparsam.kube.observe import holds_room, is_pending, node_from_body, pod_from_body

GI = 2**30


def container(**requests: str) -> dict[str, Any]:
    return {"name": "c", "resources": {"requests": requests}}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"containers": [container(cpu="500m", memory="1Gi")]}, Resources(0, 500, GI)),
        (
            {"containers": [container(**{"nvidia.com/gpu": "2", "cpu": "1"}), container(cpu="1")]},
            Resources(2, 2000, 0),
        ),
        (
            # An init container larger than the sum counts instead, per resource.
            {
                "containers": [container(cpu="1", memory="1Gi")],
                "initContainers": [container(cpu="3")],
            },
            Resources(0, 3000, GI),
        ),
        ({"containers": [container(cpu="1")], "overhead": {"cpu": "250m"}}, Resources(0, 1250, 0)),
        ({"containers": [container(cpu="lots")]}, Resources(0, 0, 0)),
    ],
    ids=["sum", "gpus", "init-container-max", "overhead", "unparseable-is-zero"],
)
def test_pod_requests(spec: dict[str, Any], expected: Resources) -> None:
    assert pod_from_body({"metadata": {"name": "p", "namespace": "n"}, "spec": spec}).requests == (
        expected
    )


def test_pod_scheduling_constraints_and_flags() -> None:
    pod = pod_from_body(
        {
            "metadata": {
                "name": "w",
                "namespace": "team",
                "labels": {"sparsam.dev/spot": "Require", "sparsam.dev/role": "worker"},
                "annotations": {
                    "karpenter.sh/do-not-disrupt": "true",
                    "sparsam.dev/checkpoint-fresh": "true",
                },
            },
            "spec": {
                "containers": [],
                "priority": 10,
                "nodeSelector": {"nvidia.com/gpu.product": "A10G"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "bad", "operator": "Gt"},
                ],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "zone", "operator": "In", "values": ["a"]},
                                        {"key": "gen", "operator": "Gt", "values": ["3"]},
                                    ]
                                }
                            ]
                        }
                    }
                },
            },
            "status": {"nominatedNodeName": "n1"},
        }
    )
    assert pod == Pod(
        name="w",
        namespace="team",
        requests=Resources(),
        node_selector={"nvidia.com/gpu.product": "A10G"},
        tolerations=(Toleration("nvidia.com/gpu", "Exists", "", "NoSchedule"),),
        affinity=(NodeSelectorTerm((NodeSelectorRequirement("zone", "In", ("a",)),)),),
        spot="Require",
        priority=10,
        training_worker=True,
        fresh_checkpoint=True,
        do_not_disrupt=True,
        nominated_node="n1",
    )


@pytest.mark.parametrize(
    ("body", "pending", "room"),
    [
        ({"spec": {}, "status": {"phase": "Pending"}}, True, True),
        ({"spec": {"nodeName": "n"}, "status": {"phase": "Running"}}, False, True),
        ({"spec": {"nodeName": "n"}, "status": {"phase": "Succeeded"}}, False, False),
        (
            {"metadata": {"deletionTimestamp": "2026-11-22T00:00:00Z"}, "spec": {}},
            False,
            True,
        ),
    ],
    ids=["unbound", "running", "finished", "deleted-before-binding"],
)
def test_pending_and_room(body: dict[str, Any], pending: bool, room: bool) -> None:
    assert is_pending(body) is pending
    assert holds_room(body) is room


def node(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "n",
            "labels": {"sparsam.dev/pool": "p", "karpenter.sh/capacity-type": "spot"},
            "annotations": annotations or {},
            "creationTimestamp": "2026-11-22T10:00:00Z",
        },
        "spec": spec,
        "status": {
            "allocatable": {"nvidia.com/gpu": "4", "cpu": "48", "memory": "192Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


@pytest.mark.parametrize(
    ("body", "cordoned", "draining", "interruption"),
    [
        (node(), False, None, None),
        (node(unschedulable=True), True, None, None),
        (node({"sparsam.dev/draining": "ScaleDown"}, unschedulable=True), False, "ScaleDown", None),
        (
            node(
                taints=[
                    {"key": "cloud.google.com/impending-node-termination", "effect": "NoSchedule"}
                ]
            ),
            False,
            None,
            "cloud.google.com/impending-node-termination",
        ),
    ],
    ids=["plain", "an-admins-cordon", "our-drain-cordon", "interruption-taint"],
)
def test_node_facts(
    body: dict[str, Any], cordoned: bool, draining: str | None, interruption: str | None
) -> None:
    facts = node_from_body(body, (), InterruptionSignals())
    assert facts.node.pool == "p" and facts.node.capacity_type == "spot" and facts.node.ready
    assert facts.node.allocatable == Resources(4, 48000, 192 * GI)
    assert facts.node.cordoned is cordoned
    assert facts.draining == draining
    assert facts.interruption == interruption


def test_interruption_conditions_are_configurable() -> None:
    body = node()
    body["status"]["conditions"].append({"type": "VMEventScheduled", "status": "True"})
    assert node_from_body(body, (), InterruptionSignals()).interruption is None
    signals = InterruptionSignals(condition_types=frozenset({"VMEventScheduled"}))
    assert node_from_body(body, (), signals).interruption == "VMEventScheduled"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            '{"kind":"Status","message":"pods is forbidden: User \\"x\\" cannot create"}',
            'creating pod a/b: 403 Forbidden: pods is forbidden: User "x" cannot create',
            id="status-message",
        ),
        pytest.param("not json", "creating pod a/b: 403 Forbidden", id="no-status"),
        pytest.param(None, "creating pod a/b: 403 Forbidden", id="no-body"),
    ],
)
def test_a_refusal_is_one_line_with_the_apiservers_sentence(
    body: str | None, expected: str
) -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = body
    assert str(refused("creating pod a/b", exc)) == expected
