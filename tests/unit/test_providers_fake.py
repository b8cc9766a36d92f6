"""The programmable fake node pool provider: scripted failures, recorded calls, real guards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from sparsam.api.gpunodepool import GPUNodePool
from sparsam.providers.fake import Call, FakeNodePoolProvider, Method
from sparsam.providers.nodepool import (
    InsufficientCapacity,
    MaxNodesExceeded,
    NodePoolProvider,
    NotFound,
    ProviderError,
    Transient,
)


def _pool(name: str = "spot", max_nodes: int = 3) -> GPUNodePool:
    return GPUNodePool.from_body(
        {
            "metadata": {"name": name},
            "spec": {
                "provider": {"kwok": {}},
                "nodeTemplate": {"gpuType": "NVIDIA-T4", "gpusPerNode": 1, "cpu": 4, "memory": 1},
                "capacityType": "spot",
                "pricePerHour": 0.2,
                "maxNodes": max_nodes,
            },
        }
    )


def test_the_fake_is_a_node_pool_provider() -> None:
    provider: NodePoolProvider = FakeNodePoolProvider()
    assert provider.size(_pool()) == 0


@dataclass(frozen=True)
class Script:
    method: Method
    error: type[ProviderError]
    times: int
    pool: str | None = None


@pytest.mark.parametrize(
    ("script", "attempts", "outcomes"),
    [
        pytest.param(
            Script("scale_up", InsufficientCapacity, 2),
            3,
            [InsufficientCapacity, InsufficientCapacity, ["spot-1"]],
            id="insufficient-twice-then-succeeds",
        ),
        pytest.param(
            Script("scale_up", Transient, 1),
            2,
            [Transient, ["spot-1"]],
            id="transient-once",
        ),
        pytest.param(
            Script("scale_up", InsufficientCapacity, 5, pool="other"),
            1,
            [["spot-1"]],
            id="script-for-another-pool-does-not-fire",
        ),
        pytest.param(
            Script("delete_node", Transient, 3),
            1,
            [["spot-1"]],
            id="script-for-another-method-does-not-fire",
        ),
    ],
)
def test_scripted_scale_up(script: Script, attempts: int, outcomes: list[Any]) -> None:
    fake = FakeNodePoolProvider()
    fake.fail(script.method, script.error, times=script.times, pool=script.pool)
    pool = _pool()
    for outcome in outcomes[:attempts]:
        if isinstance(outcome, type):
            with pytest.raises(outcome, match="pool spot: scripted"):
                fake.scale_up(pool, 1)
        else:
            assert fake.scale_up(pool, 1) == outcome
    # Every call is recorded, failed ones too.
    assert fake.calls == [Call("scale_up", "spot", count=1)] * attempts


def test_scripts_queue_in_order() -> None:
    fake = FakeNodePoolProvider()
    fake.fail("scale_up", InsufficientCapacity)
    fake.fail("scale_up", Transient)
    pool = _pool()
    with pytest.raises(InsufficientCapacity):
        fake.scale_up(pool, 1)
    with pytest.raises(Transient):
        fake.scale_up(pool, 1)
    assert fake.scale_up(pool, 2) == ["spot-1", "spot-2"]


@pytest.mark.parametrize(
    ("existing", "count", "error"),
    [
        pytest.param(0, 4, MaxNodesExceeded, id="above-max-from-empty"),
        pytest.param(2, 2, MaxNodesExceeded, id="above-max-from-two"),
        pytest.param(2, 1, None, id="up-to-max"),
        pytest.param(0, 0, ValueError, id="zero-is-a-bug"),
    ],
)
def test_scale_up_guards(existing: int, count: int, error: type[Exception] | None) -> None:
    fake = FakeNodePoolProvider()
    pool = _pool()
    if existing:
        fake.scale_up(pool, existing)
    if error is None:
        fake.scale_up(pool, count)
        assert fake.size(pool) == existing + count
    else:
        with pytest.raises(error):
            fake.scale_up(pool, count)
        assert fake.size(pool) == existing


def test_delete_node_removes_it_and_again_is_not_found() -> None:
    fake = FakeNodePoolProvider()
    pool = _pool()
    fake.scale_up(pool, 2)
    fake.delete_node(pool, "spot-1")
    assert fake.nodes == {"spot": ["spot-2"]}
    with pytest.raises(NotFound):
        fake.delete_node(pool, "spot-1")
    # Names never repeat, as with real nodes.
    assert fake.scale_up(pool, 1) == ["spot-3"]
    assert [call.method for call in fake.calls] == [
        "scale_up",
        "delete_node",
        "delete_node",
        "scale_up",
    ]


def test_fail_needs_a_positive_count() -> None:
    with pytest.raises(ValueError, match="times"):
        FakeNodePoolProvider().fail("size", Transient, times=0)
