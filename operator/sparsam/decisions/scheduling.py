"""Kubernetes scheduling predicates the capacity planner needs, matched the way kube-scheduler
matches them: taints and tolerations, node selectors, required node affinity.

Only what decides whether a pod *may* land on a node is here; whether it *fits* (resources) is
the planner's business. Preferences (PreferNoSchedule taints, preferred affinity) do not forbid
a node, so they are ignored, as the scheduler's filters ignore them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from sparsam.api.gpunodepool import Taint, TaintEffect

TolerationOperator = Literal["Exists", "Equal"]
SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]

#: Taint effects that keep a pod off a node; PreferNoSchedule only discourages it.
FORBIDDING_EFFECTS: frozenset[str] = frozenset({"NoSchedule", "NoExecute"})


@dataclass(frozen=True, slots=True)
class Toleration:
    """corev1.Toleration. An empty `key` with operator Exists tolerates every taint; an empty
    (None) `effect` matches every effect."""

    key: str = ""
    operator: TolerationOperator = "Equal"
    value: str = ""
    effect: TaintEffect | None = None

    def tolerates(self, taint: Taint) -> bool:
        if self.effect is not None and self.effect != taint.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == (taint.value or "")


@dataclass(frozen=True, slots=True)
class NodeSelectorRequirement:
    """One matchExpressions entry of required node affinity (Gt and Lt are not supported)."""

    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        return value is None


@dataclass(frozen=True, slots=True)
class NodeSelectorTerm:
    """One of requiredDuringSchedulingIgnoredDuringExecution's nodeSelectorTerms: its
    requirements are ANDed. As in Kubernetes, a term without requirements matches no node."""

    match_expressions: tuple[NodeSelectorRequirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return bool(self.match_expressions) and all(
            r.matches(labels) for r in self.match_expressions
        )


def untolerated(tolerations: Iterable[Toleration], taints: Iterable[Taint]) -> Taint | None:
    """The first taint that keeps a pod with these tolerations off the node, or None."""
    tolerations = tuple(tolerations)
    for taint in taints:
        if taint.effect not in FORBIDDING_EFFECTS:
            continue
        if not any(t.tolerates(taint) for t in tolerations):
            return taint
    return None


def selector_mismatch(
    selector: Iterable[tuple[str, str]], labels: Mapping[str, str]
) -> tuple[str, str] | None:
    """The first `key=value` of a nodeSelector that the labels do not carry, or None."""
    for key, value in selector:
        if labels.get(key) != value:
            return key, value
    return None


def affinity_matches(terms: tuple[NodeSelectorTerm, ...], labels: Mapping[str, str]) -> bool:
    """Required node affinity: the terms are ORed; no terms at all means no constraint."""
    return not terms or any(term.matches(labels) for term in terms)


def affinity_keys(terms: Iterable[NodeSelectorTerm]) -> set[str]:
    return {r.key for term in terms for r in term.match_expressions}


def describe_taint(taint: Taint) -> str:
    """`key=value:Effect`, as `kubectl taint` writes it."""
    value = f"={taint.value}" if taint.value else ""
    return f"{taint.key}{value}:{taint.effect}"
