"""The capacity planner's working state: multi-dimensional bin packing in buckets.

Pods that are interchangeable for placement (same requests, node selector, tolerations,
affinity, spot policy and namespace rules) share a `Shape`; nodes that are interchangeable for
matching (same relevant labels, taints, capacity type, GPU type and readiness) share a
`NodeClass`. Inside a class, nodes (`Slot`s) are indexed by their free room. Placing a group of
identical pods then walks (class, room) buckets, not nodes: whether a shape may go to a class is
checked once and cached, and `how_many` pods of a shape fit a room is one division per resource.
Because interchangeable slots are picked from the same bucket, the outcome of a packing depends
only on the multiset of (class, room), never on list order; that keeps planning deterministic.

Everything here is mutable and private to one planning run; the inputs and the plan are frozen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final, Literal

from sparsam.api.gpunodepool import CapacityType, Taint
from sparsam.decisions.cluster import CapacityRules, Pod
from sparsam.decisions.scheduling import (
    FORBIDDING_EFFECTS,
    NodeSelectorTerm,
    Toleration,
    affinity_matches,
    describe_taint,
    selector_mismatch,
    untolerated,
)

#: Free room or requests: (GPUs, CPU millicores, memory bytes).
Room = tuple[int, int, int]
#: ready: takes pending and moved pods; provisioning: not ready yet, takes pending pods once it
#: is; off: cordoned, or not ready for too long: takes nothing.
Kind = Literal["ready", "provisioning", "off"]
IndexKey = tuple[Room, bool]
#: How many pods that request nothing fit a node (pod-count limits are not modelled).
UNBOUNDED: Final = 1 << 40


def fits(req: Room, room: Room) -> bool:
    return req[0] <= room[0] and req[1] <= room[1] and req[2] <= room[2]


def how_many(req: Room, room: Room) -> int:
    """How many pods requesting `req` fit into `room`."""
    count = UNBOUNDED
    for need, have in zip(req, room, strict=True):
        if need:
            count = min(count, have // need)
    return count


class Shape:
    """Pods that are interchangeable for placement."""

    __slots__ = ("affinity", "id", "req", "rules", "selector", "spot", "tolerations")

    def __init__(self, ident: int, pod: Pod, rules: CapacityRules) -> None:
        self.id = ident
        self.req: Room = pod.requests.as_tuple()
        self.selector = tuple(sorted(pod.node_selector.items()))
        self.tolerations: tuple[Toleration, ...] = pod.tolerations
        self.affinity: tuple[NodeSelectorTerm, ...] = pod.affinity
        self.spot = pod.spot
        self.rules = rules


class NodeClass:
    """Nodes that are interchangeable for matching; `index` holds its slots by free room and
    by whether they carry any (non-daemon) pod."""

    __slots__ = ("capacity_type", "gpu_type", "has_gpus", "id", "index", "kind", "labels", "taints")

    def __init__(
        self,
        ident: int,
        labels: Mapping[str, str],
        taints: tuple[Taint, ...],
        capacity_type: CapacityType,
        gpu_type: str,
        has_gpus: bool,
        kind: Kind,
    ) -> None:
        self.id = ident
        self.labels = labels
        self.taints = taints
        self.capacity_type: CapacityType = capacity_type
        self.gpu_type = gpu_type
        self.has_gpus = has_gpus
        self.kind: Kind = kind
        self.index: dict[IndexKey, dict[int, Slot]] = {}


class Entry:
    """One pod during planning: its shape (computed lazily for bound pods), where it was bound
    when planning began (`home`, None for a pending pod) and where the plan has it now."""

    __slots__ = ("home", "pod", "shape", "slot")

    def __init__(self, pod: Pod, shape: Shape | None, home: Slot | None) -> None:
        self.pod = pod
        self.shape = shape
        self.home = home
        self.slot = home


class Slot:
    """One node, existing or planned (`new`)."""

    __slots__ = (
        "alloc",
        "cls",
        "created",
        "empty_since",
        "name",
        "new",
        "pods",
        "pool",
        "removed",
        "room",
        "serial",
    )

    def __init__(
        self,
        serial: int,
        name: str,
        pool: str | None,
        cls: NodeClass,
        alloc: Room,
        room: Room,
        created: datetime,
        empty_since: datetime | None,
        *,
        new: bool,
    ) -> None:
        self.serial = serial
        self.name = name
        self.pool = pool
        self.cls = cls
        self.alloc = alloc
        self.room = room
        self.created = created
        self.empty_since = empty_since
        self.new = new
        self.pods: list[Entry] = []
        self.removed = False

    def utilization(self) -> float:
        """The most-requested resource's share of allocatable (daemon pods included)."""
        shares = [(a - r) / a for a, r in zip(self.alloc, self.room, strict=True) if a > 0]
        return max(shares, default=0.0)


def mismatch(shape: Shape, cls: NodeClass) -> str | None:
    """Why pods of `shape` may not run on nodes of `cls` at all (size aside), or None. The
    sentence has the nodes for subject: "(pool x) has taint ..."."""
    if shape.spot == "Never" and cls.capacity_type == "spot":
        return "is spot, and the pod's spot policy is Never"
    if shape.spot == "Require" and cls.capacity_type != "spot":
        return "is on-demand, and the pod's spot policy is Require"
    allowed = shape.rules.allowed_gpu_types
    if allowed is not None and cls.has_gpus and cls.gpu_type not in allowed:
        listed = ", ".join(sorted(allowed))
        return f"has GPU type {cls.gpu_type}, not in allowedGPUTypes ({listed})"
    missing = selector_mismatch(shape.selector, cls.labels)
    if missing is not None:
        return f"does not match nodeSelector {missing[0]}={missing[1]}"
    if not affinity_matches(shape.affinity, cls.labels):
        return "does not match the required node affinity"
    taint = untolerated(shape.tolerations, cls.taints)
    if taint is not None:
        return f"has taint {describe_taint(taint)}, which the pod does not tolerate"
    return None


Journal = list[tuple["Slot", Room, int]]


class WorkState:
    """Slots, their classes and the room index; shapes interned; compatibility cached."""

    def __init__(self, label_keys: Iterable[str]) -> None:
        #: Only labels some pod selects on tell nodes apart (hostname labels do not, usually).
        self.label_keys = tuple(sorted(set(label_keys)))
        self.classes: dict[tuple[object, ...], NodeClass] = {}
        self.slots: list[Slot] = []
        self._shapes: dict[tuple[object, ...], Shape] = {}
        self._compatible: dict[tuple[int, int], bool] = {}

    # --- interning ------------------------------------------------------------------------

    def shape(self, pod: Pod, rules: CapacityRules) -> Shape:
        selector = pod.node_selector
        key = (
            pod.requests,
            tuple(sorted(selector.items())) if selector else (),
            pod.tolerations,
            pod.affinity,
            pod.spot,
            rules,
        )
        found = self._shapes.get(key)
        if found is None:
            found = self._shapes[key] = Shape(len(self._shapes), pod, rules)
        return found

    def node_class(
        self,
        labels: Mapping[str, str],
        taints: tuple[Taint, ...],
        capacity_type: CapacityType,
        gpu_type: str,
        has_gpus: bool,
        kind: Kind,
    ) -> NodeClass:
        relevant = {k: labels[k] for k in self.label_keys if k in labels}
        forbidding = tuple(t for t in taints if t.effect in FORBIDDING_EFFECTS)
        key = (tuple(relevant.items()), forbidding, capacity_type, gpu_type, has_gpus, kind)
        found = self.classes.get(key)
        if found is None:
            found = NodeClass(
                len(self.classes), relevant, forbidding, capacity_type, gpu_type, has_gpus, kind
            )
            self.classes[key] = found
        return found

    def compatible(self, shape: Shape, cls: NodeClass) -> bool:
        key = (shape.id, cls.id)
        known = self._compatible.get(key)
        if known is None:
            known = self._compatible[key] = mismatch(shape, cls) is None
        return known

    # --- the room index -------------------------------------------------------------------

    def add_slot(self, slot: Slot) -> None:
        self.slots.append(slot)
        self.index(slot)

    def index(self, slot: Slot) -> None:
        if slot.cls.kind != "off" and not slot.removed:
            key = (slot.room, bool(slot.pods))
            slot.cls.index.setdefault(key, {})[slot.serial] = slot

    def unindex(self, slot: Slot) -> None:
        index = slot.cls.index
        key = (slot.room, bool(slot.pods))
        bucket = index.get(key)
        if bucket is not None and bucket.pop(slot.serial, None) is not None and not bucket:
            del index[key]

    def put(self, slot: Slot, entries: list[Entry], req: Room, journal: Journal | None) -> None:
        """Place `entries` (each requesting `req`) on `slot`."""
        count = len(entries)
        self.unindex(slot)
        if journal is not None:
            journal.append((slot, slot.room, count))
        room = slot.room
        slot.room = (room[0] - req[0] * count, room[1] - req[1] * count, room[2] - req[2] * count)
        slot.pods.extend(entries)
        for entry in entries:
            entry.slot = slot
        self.index(slot)

    def undo(self, journal: Journal, origin: Slot) -> None:
        """Take back the placements in `journal`, returning their pods to `origin`."""
        for slot, room, count in reversed(journal):
            self.unindex(slot)
            for entry in slot.pods[len(slot.pods) - count :]:
                entry.slot = origin
            del slot.pods[len(slot.pods) - count :]
            slot.room = room
            self.index(slot)
        journal.clear()

    def fill(
        self,
        shape: Shape,
        entries: list[Entry],
        *,
        moving: bool = False,
        journal: Journal | None = None,
        spot_only: bool = False,
    ) -> int:
        """Place as many of `entries` (all of `shape`) as fit into existing room; return how
        many, always a prefix. Rooms are tried spot before on-demand, then tightest first (best
        fit on GPUs, then CPU, then memory), busy nodes before empty ones. Pending pods may go
        to ready and provisioning nodes; `moving` pods (evicted to empty a node) only to ready
        nodes that already have pods, so nothing is moved onto an idle node. `spot_only`: room
        on spot nodes only."""
        req = shape.req
        gpus, cpu, memory = req
        candidates: list[tuple[int, Room, bool, int, IndexKey, NodeClass]] = []
        for cls in self.classes.values():
            if not cls.index or cls.kind == "off" or (moving and cls.kind != "ready"):
                continue
            if not self.compatible(shape, cls):
                continue
            if spot_only and cls.capacity_type != "spot":
                continue
            tier = 0 if cls.capacity_type == "spot" else 1
            for key in cls.index:
                room, busy = key
                if moving and not busy:
                    continue
                if room[0] >= gpus and room[1] >= cpu and room[2] >= memory:
                    candidates.append((tier, room, not busy, cls.id, key, cls))
        candidates.sort(key=lambda c: c[:4])
        placed = 0
        wanted = len(entries)
        for _, room, _, _, key, cls in candidates:
            per_slot = how_many(req, room)
            bucket = cls.index.get(key)
            while bucket and placed < wanted:
                slot = next(iter(bucket.values()))
                take = min(per_slot, wanted - placed)
                self.put(slot, entries[placed : placed + take], req, journal)
                placed += take
                bucket = cls.index.get(key)
            if placed == wanted:
                break
        return placed
