"""Which CostPolicy applies to a namespace.

Every namespace has at most one *effective* CostPolicy, chosen like this:

1. **Selection.** A policy selects a namespace when its `spec.namespaceSelector` matches the
   namespace's labels, with the rules of a Kubernetes `metav1.LabelSelector`:

   - every `matchLabels` pair and every `matchExpressions` requirement must hold (AND);
   - `In`: the label is present and its value is one of `values`;
   - `NotIn`: the label is absent, or its value is not one of `values`;
   - `Exists`: the label is present (any value, the empty one too);
   - `DoesNotExist`: the label is absent;
   - an empty selector (`namespaceSelector: {}`) selects every namespace: that is how to write
     a cluster-wide default policy (give it a low priority).

   A requirement the API server would reject (`In` or `NotIn` without values, `Exists` or
   `DoesNotExist` with values, an unknown operator) makes the policy select no namespace, rather
   than more namespaces than its author meant. The CRD's validation keeps such policies out of
   the cluster in the first place.

2. **Priority.** Of the policies that select the namespace, the one with the highest
   `spec.priority` (0 to 1000, default 0) is the effective policy.

3. **Ties.** Among policies of equal priority, the one whose `metadata.name` comes first in
   alphabetical order wins (plain character order, which for Kubernetes names — lowercase
   letters, digits, `-` and `.` — is the order `kubectl get costpolicies` lists them in). So
   `a-team` beats `b-team`, and `10-gpu` beats `20-gpu`. The first name was chosen because it
   needs no knowledge beyond the list itself: read the policies top to bottom and the first one
   of the highest priority wins; and a name prefix (`00-`, `10-`, ...) pins an order without
   touching priorities. A tie is still better avoided: give each policy meant for the same
   namespaces its own priority.

4. **No selection.** A namespace no policy selects has no effective policy: its workloads run
   with the operator's defaults (spot `Prefer`, no budget, every GPU type allowed, ...).

The result depends only on the policies and the namespace's labels: not on the order in which
the operator happens to see the policies, nor on when they were created.

**Policies do not merge.** The effective policy applies as a whole; the policies it wins over
contribute nothing, field by field or otherwise. A field the winning policy leaves out has the
CRD's default (or no rule at all, e.g. no budget), never the value of a lower-priority policy.
This keeps a policy readable on its own: what `kubectl get costpolicy NAME -o yaml` shows is
everything that governs the namespaces it wins. A merge would make the rules of a namespace a
product of several objects, kept in different files and perhaps by different teams; and some
fields cannot be merged meaningfully (a budget is one sum of money for all the namespaces a
policy governs). To share settings between policies, repeat them (Kustomize or Helm make that
cheap in Git).

A policy can select a namespace and still not govern it, because a policy of higher priority
(or of equal priority and an earlier name) selects it too: the namespace is *overridden*. A
policy's `status.matchedNamespaces` lists the namespaces it governs
(`governed_namespaces`), not every namespace it selects (`matched_namespaces`).

Pure functions over the typed models; the controller passes the policies and namespace labels
from its watch caches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sparsam.api.costpolicy import CostPolicy, LabelSelector, LabelSelectorRequirement

__all__ = [
    "effective_policies",
    "effective_policy",
    "governed_namespaces",
    "matched_namespaces",
    "overridden_namespaces",
    "precedence",
    "requirement_matches",
    "selector_matches",
]


def requirement_matches(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    """Whether one matchExpressions requirement holds for `labels`.

    An invalid requirement (In/NotIn without values, Exists/DoesNotExist with values, an unknown
    operator) holds for no labels at all.
    """
    values = requirement.values or ()
    present = requirement.key in labels
    operator = requirement.operator
    if operator in ("In", "NotIn"):
        if not values:
            return False
        inside = present and labels[requirement.key] in values
        return inside if operator == "In" else not inside
    if operator in ("Exists", "DoesNotExist"):
        if values:
            return False
        return present if operator == "Exists" else not present
    return False


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether `selector` (a metav1.LabelSelector) matches `labels`.

    matchLabels and matchExpressions are ANDed; an empty selector matches every set of labels.
    """
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    return all(
        requirement_matches(requirement, labels) for requirement in selector.match_expressions or ()
    )


def precedence(policy: CostPolicy) -> tuple[int, str, str]:
    """Sort key: the policy that sorts first wins (highest priority, then first name).

    The uid is a last resort for two objects of the same name (an old and a new copy while a
    policy is deleted and created again), so the order is total and never depends on the input.
    """
    return (-policy.spec.priority, policy.metadata.name, policy.metadata.uid)


def _by_precedence(policies: Iterable[CostPolicy]) -> list[CostPolicy]:
    return sorted(policies, key=precedence)


def _first_match(ranked: Iterable[CostPolicy], labels: Mapping[str, str]) -> CostPolicy | None:
    for policy in ranked:
        if selector_matches(policy.spec.namespace_selector, labels):
            return policy
    return None


def effective_policy(
    policies: Iterable[CostPolicy], namespace_labels: Mapping[str, str]
) -> CostPolicy | None:
    """The effective policy of a namespace with `namespace_labels`, or None if none selects it.

    Of the policies whose namespaceSelector matches, the highest spec.priority wins; ties go to
    the alphabetically first metadata.name. See the module docstring.
    """
    return _first_match(_by_precedence(policies), namespace_labels)


def effective_policies(
    policies: Iterable[CostPolicy], namespaces: Mapping[str, Mapping[str, str]]
) -> dict[str, CostPolicy | None]:
    """The effective policy (or None) of every namespace in `namespaces` (name -> labels)."""
    ranked = _by_precedence(policies)
    return {name: _first_match(ranked, labels) for name, labels in namespaces.items()}


def matched_namespaces(
    policy: CostPolicy, namespaces: Mapping[str, Mapping[str, str]]
) -> tuple[str, ...]:
    """The namespaces (name -> labels) whose labels `policy` selects, sorted by name.

    Whether the policy also governs them is `governed_namespaces`; that, not this, is what
    status.matchedNamespaces holds (see the CRD).
    """
    selector = policy.spec.namespace_selector
    return tuple(
        sorted(name for name, labels in namespaces.items() if selector_matches(selector, labels))
    )


def _contenders(policy: CostPolicy, policies: Iterable[CostPolicy]) -> list[CostPolicy]:
    """`policies` with `policy` in place of any copy of the same name (older, from a cache)."""
    others = [p for p in policies if p.metadata.name != policy.metadata.name]
    return [*others, policy]


def governed_namespaces(
    policy: CostPolicy,
    policies: Iterable[CostPolicy],
    namespaces: Mapping[str, Mapping[str, str]],
) -> tuple[str, ...]:
    """The namespaces whose effective policy is `policy`, sorted by name: for
    status.matchedNamespaces.

    `policies` are all the cluster's policies; `policy` need not be among them, and an entry of
    the same name is taken for an older copy of it and left out, so the handler of a policy can
    pass the body it was given beside the policies from its cache.
    """
    winners = effective_policies(_contenders(policy, policies), namespaces)
    return tuple(sorted(name for name, winner in winners.items() if winner is policy))


def overridden_namespaces(
    policy: CostPolicy,
    policies: Iterable[CostPolicy],
    namespaces: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """The namespaces `policy` selects but does not govern, each with the name of the policy that
    does (for a condition or Event that explains why a namespace is missing from
    status.matchedNamespaces). Arguments as for `governed_namespaces`."""
    contenders = _contenders(policy, policies)
    winners = effective_policies(contenders, namespaces)
    return {
        name: winner.metadata.name
        for name in matched_namespaces(policy, namespaces)
        if (winner := winners[name]) is not None and winner is not policy
    }
