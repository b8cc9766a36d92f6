"""The rounds of the capacity planner: minNodes, pending pods, scale-down, to a fixed point.

`sparsam.decisions.capacity` is the public face (its module doc explains the heuristic); this
module does the work on the mutable `packing.WorkState` and leaves the result in it: which
slots are new, which are removed and why, where every pod ended up, which pods are left.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sparsam.api import constants as c
from sparsam.api.parse import format_duration
from sparsam.decisions.cluster import CapacityRules, ClusterState, Node, Offering, Pod, Pool
from sparsam.decisions.packing import (
    Entry,
    Journal,
    Kind,
    Shape,
    Slot,
    WorkState,
    fits,
    how_many,
)
from sparsam.decisions.scheduling import affinity_keys

#: A safety stop for the fixed-point loop; real plans settle in two or three rounds.
MAX_ROUNDS: Final = 1000
_NO_TROUBLE: Final = Offering()


@dataclass(slots=True)
class Group:
    """Pending pods of one shape and priority that have no place yet."""

    shape: Shape
    priority: int
    entries: list[Entry]


class Planner:
    """One planning run. Build it, `run()` it, read the outcome off its attributes."""

    def __init__(self, state: ClusterState, now: datetime) -> None:
        self.state = state
        self.now = now
        self.pools = {pool.name: pool for pool in sorted(state.pools, key=lambda p: p.name)}
        self.ws = WorkState(selected_label_keys(state))
        self.templates = {
            name: self.ws.node_class(
                pool.labels,
                pool.taints,
                pool.capacity_type,
                pool.gpu_type,
                pool.gpus_per_node > 0,
                "provisioning",
            )
            for name, pool in self.pools.items()
        }
        #: Nodes per pool now: existing ones not removed, plus the ones the plan adds.
        self.count: Counter[str] = Counter()
        self.added_for_min: Counter[str] = Counter()
        #: Pool -> why pods that prefer spot got new nodes there (a fallback).
        self.fallbacks: dict[str, set[str]] = defaultdict(set)
        #: Node -> why it goes (existing nodes only).
        self.removed: dict[str, str] = {}
        self._tiers: dict[int, list[list[Pool]]] = {}
        self._by_name: dict[str, Slot] = {}
        for node in state.nodes:
            self._add_node(node)
        self.pending: list[Entry] = []
        self.groups = self._group_pending(state.pending)

    # --- building the working state ---------------------------------------------------------

    def _add_node(self, node: Node) -> None:
        pool = self.pools.get(node.pool) if node.pool is not None else None
        kind: Kind
        if node.cordoned:
            kind = "off"
        elif node.ready:
            kind = "ready"
        elif self.now - node.created <= self.state.settings.provisioning_timeout:
            kind = "provisioning"
        else:
            kind = "off"
        gpu_type = pool.gpu_type if pool else node.labels.get(c.LABEL_GPU_PRODUCT, "")
        alloc = node.allocatable.as_tuple()
        cls = self.ws.node_class(
            node.labels, node.taints, node.capacity_type, gpu_type, alloc[0] > 0, kind
        )
        gpus, cpu, memory = alloc
        for pod in node.pods:
            req = pod.requests
            gpus -= req.gpus
            cpu -= req.cpu_millis
            memory -= req.memory_bytes
        slot = Slot(
            len(self.ws.slots),
            node.name,
            pool.name if pool else None,
            cls,
            alloc,
            (gpus, cpu, memory),
            node.created,
            node.empty_since,
            new=False,
        )
        slot.pods.extend(Entry(pod, None, slot) for pod in node.pods if not pod.daemon)
        self.ws.add_slot(slot)
        self._by_name[node.name] = slot
        if pool:
            self.count[pool.name] += 1

    def _group_pending(self, pending: Iterable[Pod]) -> list[Group]:
        """Pending pods nominated to a node that still takes them go there first, so that
        planning again while the added nodes come up reproduces the plan. The others are
        grouped by shape and priority, in the order the packing takes them."""
        groups: dict[tuple[int, int], Group] = {}
        nominated: list[tuple[Entry, Shape, Slot | None]] = []
        for pod in pending:
            shape = self.ws.shape(pod, self.state.rules_for(pod.namespace))
            entry = Entry(pod, shape, None)
            self.pending.append(entry)
            if pod.nominated_node is not None:
                nominated.append((entry, shape, self._by_name.get(pod.nominated_node)))
                continue
            group = groups.get((shape.id, pod.priority))
            if group is None:
                group = groups[shape.id, pod.priority] = Group(shape, pod.priority, [])
            group.entries.append(entry)
        for entry, shape, slot in sorted(
            nominated, key=lambda n: (-n[0].pod.priority, n[0].pod.key)
        ):
            if (
                slot is not None
                and slot.cls.kind != "off"
                and fits(shape.req, slot.room)
                and self.ws.compatible(shape, slot.cls)
            ):
                self.ws.put(slot, [entry], shape.req, None)
                continue
            key = (shape.id, entry.pod.priority)
            groups.setdefault(key, Group(shape, entry.pod.priority, [])).entries.append(entry)
        for group in groups.values():
            group.entries.sort(key=lambda e: e.pod.key)

        def order(group: Group) -> tuple[int, int, int, int, tuple[str, str]]:
            req = group.shape.req
            return (-group.priority, -req[0], -req[1], -req[2], group.entries[0].pod.key)

        return sorted(groups.values(), key=order)

    def _new_slot(self, pool: Pool) -> Slot:
        room = pool.node_resources.as_tuple()
        serial = len(self.ws.slots)
        slot = Slot(
            serial,
            f"<new {pool.name} node {serial}>",
            pool.name,
            self.templates[pool.name],
            room,
            room,
            self.now,
            self.now,
            new=True,
        )
        self.ws.add_slot(slot)
        self.count[pool.name] += 1
        return slot

    # --- the rounds -------------------------------------------------------------------------

    def run(self) -> Planner:
        for _ in range(MAX_ROUNDS):
            changed = self._reach_min_nodes()
            changed = self._place_pending() or changed
            changed = self._scale_down() or changed
            if not changed:
                break
        return self

    def _reach_min_nodes(self) -> bool:
        changed = False
        for pool in self.pools.values():
            short = min(pool.min_nodes, pool.max_nodes) - self.count[pool.name]
            if short > 0 and not self.unavailable(pool):
                for _ in range(short):
                    self._new_slot(pool)
                self.added_for_min[pool.name] += short
                changed = True
        return changed

    def _place_pending(self) -> bool:
        changed = False
        left: list[Group] = []
        for group in self.groups:
            entries = group.entries
            if self._spot_before_on_demand_room(group.shape):
                rest = self._place_on_spot_first(group.shape, entries)
            else:
                placed = self.ws.fill(group.shape, entries)
                rest = entries[placed:]
            if rest:
                rest = self._open_nodes(group.shape, rest)
            if len(rest) != len(entries):
                changed = True
            if rest:
                left.append(Group(group.shape, group.priority, rest))
        self.groups = left
        return changed

    def _open_nodes(self, shape: Shape, rest: list[Entry], tiers: int = 3) -> list[Entry]:
        """Open new nodes for `rest` in the cheapest allowed pools of the first `tiers` tiers;
        return what still has none."""
        start = 0
        for tier, pools in enumerate(self.pool_tiers(shape)[:tiers]):
            if tier == 0 and self._spreads(pools):
                start = self._open_spread(shape, pools, rest, start)
                if start == len(rest):
                    return []
                continue
            for pool in cheapest_first(pools, shape.req, len(rest) - start):
                headroom = pool.max_nodes - self.count[pool.name]
                if headroom <= 0:
                    continue
                per_node = how_many(shape.req, pool.node_resources.as_tuple())
                nodes = min(headroom, math.ceil((len(rest) - start) / per_node))
                for _ in range(nodes):
                    take = min(per_node, len(rest) - start)
                    self.ws.put(self._new_slot(pool), rest[start : start + take], shape.req, None)
                    start += take
                if nodes and shape.spot == "Prefer" and tier > 0:
                    self.fallbacks[pool.name].add(self._fallback_note(shape, pool))
                if start == len(rest):
                    return []
        return rest[start:]

    def _spot_before_on_demand_room(self, shape: Shape) -> bool:
        """Whether pods that Prefer spot get new spot nodes before free room on on-demand
        nodes (`PlannerSettings.new_spot_before_on_demand_room`): a training job placed in an
        idle on-demand node's room stays on on-demand for the rest of its run, where the room
        would have cost only its scaleDownAfter."""
        return (
            self.state.settings.new_spot_before_on_demand_room
            and shape.spot == "Prefer"
            and bool(self.pool_tiers(shape)[0])
        )

    def _place_on_spot_first(self, shape: Shape, entries: list[Entry]) -> list[Entry]:
        """Room on spot nodes, then new nodes in the healthy spot pools, then any room left
        (on-demand); returns what still has no place (for the other tiers)."""
        placed = self.ws.fill(shape, entries, spot_only=True)
        rest = entries[placed:]
        if rest:
            rest = self._open_nodes(shape, rest, tiers=1)
        if rest:
            placed = self.ws.fill(shape, rest)
            rest = rest[placed:]
        return rest

    def _spreads(self, pools: list[Pool]) -> bool:
        """Whether new nodes in these pools are spread (`PlannerSettings.spot_pool_max_share`):
        two or more spot pools and a share below 1."""
        share = self.state.settings.spot_pool_max_share
        spot = [p for p in pools if p.capacity_type == c.CAPACITY_SPOT]
        return share < 1.0 and len(spot) >= 2 and len(spot) == len(pools)

    def _open_spread(self, shape: Shape, pools: list[Pool], rest: list[Entry], start: int) -> int:
        """Open new nodes for `rest[start:]` one at a time across the spot `pools`, so that one
        pool's outage or group loss takes a bounded share: each node goes to the cheapest pool
        (for this shape) that stays within `spot_pool_max_share` of these pools' nodes once it
        has it, else to the pool with the fewest nodes (cheapest first on ties). Returns how
        many entries have a node now."""
        share = self.state.settings.spot_pool_max_share
        order = cheapest_first(pools, shape.req, len(rest) - start)
        while start < len(rest):
            open_ = [p for p in order if p.max_nodes - self.count[p.name] > 0]
            if not open_:
                break
            total = sum(self.count[p.name] for p in pools) + 1
            pool = pick_spread_pool(open_, self.count, share, total)
            per_node = how_many(shape.req, pool.node_resources.as_tuple())
            take = min(per_node, len(rest) - start)
            self.ws.put(self._new_slot(pool), rest[start : start + take], shape.req, None)
            start += take
        return start

    def pool_tiers(self, shape: Shape) -> list[list[Pool]]:
        """Pools that may get new nodes for `shape`, in the order its spot policy tries them:
        Require: available spot pools. Never: on-demand pools. Prefer: healthy spot pools, then
        on-demand pools, then spot pools that failed within onDemandFallbackAfter."""
        known = self._tiers.get(shape.id)
        if known is not None:
            return known
        tiers: list[list[Pool]] = [[], [], []]
        for pool in self.pools.values():
            if pool.max_nodes <= 0 or self.unavailable(pool):
                continue
            if not fits(shape.req, pool.node_resources.as_tuple()):
                continue
            if not self.ws.compatible(shape, self.templates[pool.name]):
                continue
            if pool.capacity_type == c.CAPACITY_SPOT:
                failing = shape.spot == "Prefer" and self.failed_recently(pool, shape.rules)
                tiers[2 if failing else 0].append(pool)
            else:
                tiers[0 if shape.spot == "Never" else 1].append(pool)
        self._tiers[shape.id] = tiers
        return tiers

    def _fallback_note(self, shape: Shape, chosen: Pool) -> str:
        """Why pods that prefer spot get new nodes in `chosen`, which is not a healthy spot
        pool."""
        if chosen.capacity_type == c.CAPACITY_SPOT:
            return "spot although it failed recently: no on-demand pool fits"
        notes = []
        for pool in self.pools.values():
            if pool.capacity_type != c.CAPACITY_SPOT:
                continue
            if not fits(shape.req, pool.node_resources.as_tuple()):
                continue
            if not self.ws.compatible(shape, self.templates[pool.name]):
                continue
            until = self.offering(pool).unavailable_until
            failed = self.offering(pool).last_failure
            if until is not None and self.now < until:
                notes.append(f"spot pool {pool.name} has no capacity until {clock(until)}")
            elif failed is not None and self.failed_recently(pool, shape.rules):
                window = format_duration(shape.rules.on_demand_fallback_after)
                ago = format_duration(self.now - failed)
                notes.append(
                    f"spot pool {pool.name} failed {ago} ago (onDemandFallbackAfter {window})"
                )
            elif self.count[pool.name] >= pool.max_nodes:
                notes.append(f"spot pool {pool.name} is at maxNodes ({pool.max_nodes})")
        return "on-demand fallback: " + ("; ".join(notes) or "no spot pool fits these pods")

    def offering(self, pool: Pool) -> Offering:
        return self.state.offerings.get(pool.name, _NO_TROUBLE)

    def unavailable(self, pool: Pool) -> bool:
        until = self.offering(pool).unavailable_until
        return until is not None and self.now < until

    def failed_recently(self, pool: Pool, rules: CapacityRules) -> bool:
        failed = self.offering(pool).last_failure
        return failed is not None and self.now - failed < rules.on_demand_fallback_after

    def _scale_down(self) -> bool:
        empty: list[tuple[datetime, str, Slot]] = []
        underused: list[tuple[float, float, str, Slot]] = []
        threshold = self.state.settings.underused_below
        for slot in self.ws.slots:
            if slot.removed or slot.pool is None:
                continue
            pool = self.pools[slot.pool]
            if not slot.pods:
                since = slot.empty_since or slot.created
                if self.now - since >= pool.scale_down_after:
                    empty.append((since, slot.name, slot))
            elif (
                self.now - slot.created >= pool.scale_down_after
                and slot.utilization() < threshold
                and all(entry.pod.movable for entry in slot.pods)
            ):
                underused.append((slot.utilization(), -pool.price_per_hour, slot.name, slot))
        changed = False
        for since, _, slot in sorted(empty, key=lambda e: e[:2]):
            pool = self.pools[slot.pool or ""]
            if self.count[pool.name] > pool.min_nodes:
                idle = format_duration(self.now - since)
                why = f"empty for {idle} (scaleDownAfter {format_duration(pool.scale_down_after)})"
                self._remove(slot, why)
                changed = True
        for share, _, _, slot in sorted(underused, key=lambda u: u[:3]):
            pool = self.pools[slot.pool or ""]
            if self.count[pool.name] > pool.min_nodes:
                moved = len(slot.pods)
                if self._move_pods_away(slot):
                    pods = "its pod fits" if moved == 1 else f"its {moved} pods fit"
                    self._remove(slot, f"under-used ({share:.0%} requested); {pods} elsewhere")
                    changed = True
        return changed

    def _move_pods_away(self, slot: Slot) -> bool:
        """Place every pod of `slot` on other ready, busy nodes; undo it all if one does not
        fit."""
        ws = self.ws
        ws.unindex(slot)
        groups: dict[int, tuple[Shape, list[Entry]]] = {}
        for entry in slot.pods:
            if entry.shape is None:
                entry.shape = ws.shape(entry.pod, self.state.rules_for(entry.pod.namespace))
            groups.setdefault(entry.shape.id, (entry.shape, []))[1].append(entry)
        ordered = sorted(groups.values(), key=lambda g: (tuple(-r for r in g[0].req), g[0].id))
        journal: Journal = []
        for shape, entries in ordered:
            if ws.fill(shape, entries, moving=True, journal=journal) < len(entries):
                ws.undo(journal, slot)
                ws.index(slot)
                return False
        slot.pods.clear()
        return True

    def _remove(self, slot: Slot, reason: str) -> None:
        self.ws.unindex(slot)
        slot.removed = True
        slot.pods.clear()
        self.count[slot.pool or ""] -= 1
        if not slot.new:
            self.removed[slot.name] = reason


def clock(when: datetime) -> str:
    """A time in a reason: RFC 3339 to the second."""
    return when.isoformat(timespec="seconds")


def cheapest_first(pools: list[Pool], req: tuple[int, int, int], pods: int) -> list[Pool]:
    """Pools by what hosting `pods` pods of `req` on new nodes of theirs costs per hour."""

    def cost(pool: Pool) -> tuple[float, float, str]:
        nodes = math.ceil(pods / how_many(req, pool.node_resources.as_tuple()))
        return (nodes * pool.price_per_hour, pool.price_per_hour, pool.name)

    return sorted(pools, key=cost)


def pick_spread_pool(
    pools: list[Pool], count: Mapping[str, int], max_share: float, total: int
) -> Pool:
    """The pool of `pools` (cheapest first) for one more node when no pool should hold more
    than `max_share` of `total` nodes (the new one included): the first that stays within the
    share once it has the node, else the one with the fewest nodes."""
    for pool in pools:
        if count.get(pool.name, 0) + 1 <= max_share * total:
            return pool
    return min(pools, key=lambda p: count.get(p.name, 0))


def selected_label_keys(state: ClusterState) -> set[str]:
    """The label keys any pod selects on: only these can tell two nodes apart."""
    keys: set[str] = set()
    pods = [*state.pending, *(pod for node in state.nodes for pod in node.pods)]
    for pod in pods:
        if pod.node_selector:
            keys.update(pod.node_selector)
        if pod.affinity:
            keys |= affinity_keys(pod.affinity)
    return keys
