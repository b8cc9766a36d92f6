"""A programmable NodePoolProvider in memory, for the GPUNodePool controller's unit tests.

It keeps each pool's nodes, records every call, and fails on a script:

    fake = FakeNodePoolProvider()
    fake.fail("scale_up", InsufficientCapacity, times=2, pool="spot")  # two refusals, then fine
    fake.scale_up(pool, 1)  # raises InsufficientCapacity
    fake.calls  # (Call("scale_up", "spot", 1, None), ...)

It enforces what the real providers do: maxNodes (MaxNodesExceeded), NotFound when deleting a
node that is not there. Node names are `<pool>-<n>`, counting up per pool, so tests can name them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from sparsam.api.gpunodepool import GPUNodePool
from sparsam.decisions.scaling import MetricSample
from sparsam.providers.nodepool import NodePoolProvider, NotFound, ProviderError, check_scale_up

Method = Literal["size", "scale_up", "delete_node"]


@dataclass(frozen=True, slots=True)
class Call:
    """One call the fake received (also those it failed)."""

    method: Method
    pool: str
    count: int | None = None
    node: str | None = None


@dataclass(slots=True)
class _Failure:
    method: Method
    error: type[ProviderError]
    pool: str | None
    remaining: int


@dataclass
class FakeNodePoolProvider:
    """NodePoolProvider in memory. `nodes` maps a pool's name to its node names."""

    nodes: dict[str, list[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    _failures: deque[_Failure] = field(default_factory=deque)
    _counters: dict[str, int] = field(default_factory=dict)

    def fail(
        self,
        method: Method,
        error: type[ProviderError],
        times: int = 1,
        pool: str | None = None,
    ) -> None:
        """The next `times` calls of `method` (on `pool`, or on any pool) raise `error`.
        Scripts queue up: the oldest matching one is used first."""
        if times < 1:
            raise ValueError("times must be >= 1")
        self._failures.append(_Failure(method, error, pool, times))

    def _maybe_fail(self, method: Method, pool: str) -> None:
        for failure in self._failures:
            if failure.method == method and failure.pool in (None, pool):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                raise failure.error(pool, f"scripted {failure.error.__name__} in {method}")

    def size(self, pool: GPUNodePool) -> int:
        name = pool.metadata.name
        self.calls.append(Call("size", name))
        self._maybe_fail("size", name)
        return len(self.nodes.get(name, []))

    def scale_up(self, pool: GPUNodePool, count: int) -> list[str]:
        name = pool.metadata.name
        self.calls.append(Call("scale_up", name, count=count))
        self._maybe_fail("scale_up", name)
        existing = self.nodes.setdefault(name, [])
        check_scale_up(pool, len(existing), count)
        added = []
        for _ in range(count):
            self._counters[name] = self._counters.get(name, 0) + 1
            added.append(f"{name}-{self._counters[name]}")
        existing.extend(added)
        return added

    def delete_node(self, pool: GPUNodePool, node_name: str) -> None:
        name = pool.metadata.name
        self.calls.append(Call("delete_node", name, node=node_name))
        self._maybe_fail("delete_node", name)
        existing = self.nodes.get(name, [])
        if node_name not in existing:
            raise NotFound(name, f"node {node_name} not found")
        existing.remove(node_name)


def _conforms(provider: FakeNodePoolProvider) -> NodePoolProvider:
    return provider  # mypy checks that FakeNodePoolProvider implements the Protocol


class FakeMetrics:
    """A programmable MetricsSource: `values[query]` is what a query returns (a float, or
    None for missing data); `down` makes every query fail like an unreachable Prometheus.
    Every query asked is recorded in `asked`."""

    def __init__(self) -> None:
        self.values: dict[str, float | None] = {}
        self.down = False
        self.asked: list[str] = []

    def sample(self, query: str) -> MetricSample:
        self.asked.append(query)
        if self.down:
            return MetricSample(None, "Prometheus unreachable (fake)")
        value = self.values.get(query)
        return MetricSample(value, "" if value is not None else "empty result (fake)")
