"""Which CostPolicy applies to a namespace: label selector semantics, priority, the tie by name,
no match, overridden policies, and that the input order never matters (hypothesis)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsam.api.common import ObjectMeta
from sparsam.api.costpolicy import (
    CostPolicy,
    CostPolicySpec,
    CostPolicyStatus,
    LabelSelector,
    LabelSelectorRequirement,
    SelectorOperator,
)
from sparsam.decisions.policy import (
    effective_policies,
    effective_policy,
    governed_namespaces,
    matched_namespaces,
    overridden_namespaces,
    selector_matches,
)


def req(key: str, operator: str, *values: str) -> LabelSelectorRequirement:
    op: SelectorOperator = operator  # type: ignore[assignment]  # invalid ones tested on purpose
    return LabelSelectorRequirement(key, op, values or None)


def sel(
    labels: Mapping[str, str] | None = None, *expressions: LabelSelectorRequirement
) -> LabelSelector:
    return LabelSelector(labels, expressions or None)


def policy(
    name: str, priority: int = 0, selector: LabelSelector | None = None, uid: str = ""
) -> CostPolicy:
    return CostPolicy(
        ObjectMeta(name=name, namespace="", uid=uid or f"uid-{name}", generation=1, labels={}),
        CostPolicySpec(namespace_selector=selector or LabelSelector(), priority=priority),
        CostPolicyStatus(),
    )


TEAM_A = {"team": "a", "env": "prod"}

# (id, selector, labels, matches)
SELECTOR_CASES: list[tuple[str, LabelSelector, dict[str, str], bool]] = [
    ("empty-selector-matches-labels", sel(), TEAM_A, True),
    ("empty-selector-matches-no-labels", sel(), {}, True),
    ("empty-matchlabels-and-expressions", LabelSelector({}, ()), TEAM_A, True),
    ("matchlabels-equal", sel({"team": "a"}), TEAM_A, True),
    ("matchlabels-other-value", sel({"team": "b"}), TEAM_A, False),
    ("matchlabels-key-absent", sel({"tier": "gold"}), TEAM_A, False),
    ("matchlabels-all-pairs-needed", sel({"team": "a", "env": "dev"}), TEAM_A, False),
    ("matchlabels-all-pairs-present", sel({"team": "a", "env": "prod"}), TEAM_A, True),
    ("matchlabels-empty-value-absent", sel({"tier": ""}), TEAM_A, False),
    ("matchlabels-empty-value-present", sel({"tier": ""}), {"tier": ""}, True),
    ("in-value-listed", sel(None, req("team", "In", "a", "b")), TEAM_A, True),
    ("in-value-not-listed", sel(None, req("team", "In", "b", "c")), TEAM_A, False),
    ("in-key-absent", sel(None, req("tier", "In", "gold")), TEAM_A, False),
    ("notin-value-listed", sel(None, req("team", "NotIn", "a")), TEAM_A, False),
    ("notin-value-not-listed", sel(None, req("team", "NotIn", "b")), TEAM_A, True),
    ("notin-key-absent", sel(None, req("tier", "NotIn", "gold")), TEAM_A, True),
    ("exists-present", sel(None, req("team", "Exists")), TEAM_A, True),
    ("exists-present-empty-value", sel(None, req("tier", "Exists")), {"tier": ""}, True),
    ("exists-absent", sel(None, req("tier", "Exists")), TEAM_A, False),
    ("doesnotexist-present", sel(None, req("team", "DoesNotExist")), TEAM_A, False),
    ("doesnotexist-absent", sel(None, req("tier", "DoesNotExist")), TEAM_A, True),
    ("doesnotexist-absent-no-labels", sel(None, req("tier", "DoesNotExist")), {}, True),
    (
        "expressions-anded-all-hold",
        sel(None, req("team", "In", "a"), req("env", "NotIn", "dev")),
        TEAM_A,
        True,
    ),
    (
        "expressions-anded-one-fails",
        sel(None, req("team", "In", "a"), req("env", "In", "dev")),
        TEAM_A,
        False,
    ),
    ("labels-and-expressions-both-hold", sel({"team": "a"}, req("env", "Exists")), TEAM_A, True),
    (
        "labels-hold-expression-fails",
        sel({"team": "a"}, req("env", "DoesNotExist")),
        TEAM_A,
        False,
    ),
    (
        "expression-holds-labels-fail",
        sel({"team": "b"}, req("env", "Exists")),
        TEAM_A,
        False,
    ),
    ("invalid-in-without-values", sel(None, req("team", "In")), TEAM_A, False),
    ("invalid-notin-without-values", sel(None, req("tier", "NotIn")), TEAM_A, False),
    ("invalid-exists-with-values", sel(None, req("team", "Exists", "a")), TEAM_A, False),
    ("invalid-doesnotexist-with-values", sel(None, req("x", "DoesNotExist", "a")), TEAM_A, False),
    ("invalid-unknown-operator", sel(None, req("team", "Gt", "1")), TEAM_A, False),
]


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [case[1:] for case in SELECTOR_CASES],
    ids=[case[0] for case in SELECTOR_CASES],
)
def test_selector_matches(selector: LabelSelector, labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


DEFAULT = policy("default", 0)
TEAM_A_POLICY = policy("team-a", 100, sel({"team": "a"}))
PROD = policy("prod", 50, sel(None, req("env", "In", "prod")))
A_TIE = policy("a-tie", 100, sel({"team": "a"}))
Z_TIE = policy("z-tie", 100, sel({"team": "a"}))
HIGH_NO_MATCH = policy("high", 1000, sel({"team": "c"}))

# (id, policies, labels, name of the effective policy or None)
EFFECTIVE_CASES: list[tuple[str, list[CostPolicy], dict[str, str], str | None]] = [
    ("no-policies", [], TEAM_A, None),
    ("no-policy-matches", [HIGH_NO_MATCH], TEAM_A, None),
    ("only-default", [DEFAULT], TEAM_A, "default"),
    ("default-for-unlabelled", [DEFAULT, TEAM_A_POLICY, PROD], {}, "default"),
    ("higher-priority-wins", [DEFAULT, PROD, TEAM_A_POLICY], TEAM_A, "team-a"),
    ("higher-priority-wins-any-order", [TEAM_A_POLICY, PROD, DEFAULT], TEAM_A, "team-a"),
    ("non-matching-higher-ignored", [HIGH_NO_MATCH, PROD, DEFAULT], TEAM_A, "prod"),
    ("tie-goes-to-first-name", [Z_TIE, A_TIE], TEAM_A, "a-tie"),
    ("tie-goes-to-first-name-reversed", [A_TIE, Z_TIE], TEAM_A, "a-tie"),
    ("tie-team-a-vs-a-tie", [TEAM_A_POLICY, Z_TIE, A_TIE], TEAM_A, "a-tie"),
    ("tie-digits-prefix", [policy("20-gpu"), policy("10-gpu")], {}, "10-gpu"),
    ("priority-beats-name", [policy("a", 1), policy("z", 2)], {}, "z"),
    (
        "same-name-uid-breaks-tie",
        [policy("x", 0, uid="uid-2"), policy("x", 0, uid="uid-1")],
        {},
        "x",
    ),
]


@pytest.mark.parametrize(
    ("policies", "labels", "expected"),
    [case[1:] for case in EFFECTIVE_CASES],
    ids=[case[0] for case in EFFECTIVE_CASES],
)
def test_effective_policy(
    policies: list[CostPolicy], labels: dict[str, str], expected: str | None
) -> None:
    winner = effective_policy(policies, labels)
    assert (winner.metadata.name if winner else None) == expected


def test_effective_policy_accepts_a_generator() -> None:
    winner = effective_policy((p for p in [DEFAULT, TEAM_A_POLICY]), TEAM_A)
    assert winner is TEAM_A_POLICY


def test_same_name_tie_is_independent_of_order() -> None:
    old, new = policy("x", uid="uid-1"), policy("x", uid="uid-2")
    assert effective_policy([old, new], {}) is effective_policy([new, old], {}) is old


NAMESPACES: dict[str, dict[str, str]] = {
    "team-a-prod": {"team": "a", "env": "prod"},
    "team-a-dev": {"team": "a", "env": "dev"},
    "team-b-prod": {"team": "b", "env": "prod"},
    "sandbox": {},
}
ALL = [DEFAULT, TEAM_A_POLICY, PROD, HIGH_NO_MATCH]

# (id, policy, matched, governed, overridden)
NAMESPACE_CASES: list[tuple[str, CostPolicy, tuple[str, ...], tuple[str, ...], dict[str, str]]] = [
    (
        "default-shadowed-where-others-win",
        DEFAULT,
        ("sandbox", "team-a-dev", "team-a-prod", "team-b-prod"),
        ("sandbox",),
        {"team-a-dev": "team-a", "team-a-prod": "team-a", "team-b-prod": "prod"},
    ),
    (
        "team-a-governs-all-it-matches",
        TEAM_A_POLICY,
        ("team-a-dev", "team-a-prod"),
        ("team-a-dev", "team-a-prod"),
        {},
    ),
    (
        "prod-shadowed-by-team-a",
        PROD,
        ("team-a-prod", "team-b-prod"),
        ("team-b-prod",),
        {"team-a-prod": "team-a"},
    ),
    ("matches-nothing", HIGH_NO_MATCH, (), (), {}),
]


@pytest.mark.parametrize(
    ("subject", "matched", "governed", "overridden"),
    [case[1:] for case in NAMESPACE_CASES],
    ids=[case[0] for case in NAMESPACE_CASES],
)
def test_matched_governed_and_overridden(
    subject: CostPolicy,
    matched: tuple[str, ...],
    governed: tuple[str, ...],
    overridden: dict[str, str],
) -> None:
    assert matched_namespaces(subject, NAMESPACES) == matched
    assert governed_namespaces(subject, ALL, NAMESPACES) == governed
    assert overridden_namespaces(subject, ALL, NAMESPACES) == overridden


def test_effective_policies_per_namespace() -> None:
    winners = effective_policies(ALL, NAMESPACES)
    assert {ns: p.metadata.name if p else None for ns, p in winners.items()} == {
        "team-a-prod": "team-a",
        "team-a-dev": "team-a",
        "team-b-prod": "prod",
        "sandbox": "default",
    }
    assert effective_policies([], NAMESPACES) == dict.fromkeys(NAMESPACES)


def test_governed_uses_the_given_body_over_a_cached_copy() -> None:
    # The cache still holds team-a at priority 100; its handler was given the new body at 10.
    lowered = policy("team-a", 10, sel({"team": "a"}))
    assert governed_namespaces(lowered, ALL, NAMESPACES) == ("team-a-dev",)
    assert overridden_namespaces(lowered, ALL, NAMESPACES) == {"team-a-prod": "prod"}
    # A policy not in the list at all (just created) is considered too.
    newcomer = policy("newcomer", 1000)
    assert governed_namespaces(newcomer, ALL, NAMESPACES) == tuple(sorted(NAMESPACES))


# --- property: the input order never matters -------------------------------------------------

KEYS = ["team", "env", "tier"]
VALUES = ["a", "b", ""]

label_sets = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)
requirements = st.one_of(
    st.builds(
        LabelSelectorRequirement,
        st.sampled_from(KEYS),
        st.sampled_from(["In", "NotIn"]),
        st.lists(st.sampled_from(VALUES), min_size=1, max_size=2).map(tuple),
    ),
    st.builds(
        LabelSelectorRequirement, st.sampled_from(KEYS), st.sampled_from(["Exists", "DoesNotExist"])
    ),
)
selectors = st.builds(
    LabelSelector,
    st.one_of(st.none(), label_sets),
    st.one_of(st.none(), st.lists(requirements, max_size=2).map(tuple)),
)


@st.composite
def policy_lists(draw: st.DrawFn) -> list[CostPolicy]:
    # Names are unique, as for cluster-scoped objects; few priorities, so ties are common.
    names = draw(st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8))
    return [policy(name, draw(st.integers(0, 3)), draw(selectors)) for name in names]


@given(policies=policy_lists(), labels=label_sets, data=st.data())
def test_result_does_not_depend_on_input_order(
    policies: list[CostPolicy], labels: dict[str, str], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(policies))
    winner = effective_policy(policies, labels)
    assert effective_policy(shuffled, labels) is winner
    assert effective_policy(reversed(policies), labels) is winner
    # And the winner is the rule written out: highest priority, then first name.
    selecting = [p for p in policies if selector_matches(p.spec.namespace_selector, labels)]
    if not selecting:
        assert winner is None
    else:
        top = max(p.spec.priority for p in selecting)
        assert winner is not None
        assert winner.metadata.name == min(
            p.metadata.name for p in selecting if p.spec.priority == top
        )


@given(policies=policy_lists(), namespaces=st.dictionaries(st.sampled_from("pqrs"), label_sets))
def test_each_selected_namespace_is_governed_by_exactly_one_policy(
    policies: list[CostPolicy], namespaces: dict[str, dict[str, str]]
) -> None:
    selected = {ns for p in policies for ns in matched_namespaces(p, namespaces)}
    governed = [ns for p in policies for ns in governed_namespaces(p, policies, namespaces)]
    assert sorted(governed) == sorted(selected)
