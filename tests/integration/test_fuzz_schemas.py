"""Objects generated from the CRDs' own schemas: the apiserver refuses each bad one naming a
field, and the operator reads every one it admits without an unexpected exception.

A small strategy builder walks each kind's openAPIV3Schema (crds/) and draws objects from it:
whole specs, valid or with faults anywhere, and examples/ objects with one value replaced, by a
valid one (often at a bound) or by a hostile one: huge, negative and zero numbers, values just
beyond a bound or beyond int32, int64 and float, empty, overlong and non-ASCII strings,
durations such as 999999999999h, '..' path segments, label keys Kubernetes refuses, required
fields left out, values of the wrong type. Each object is created with server-side dry-run
(nothing is stored), and then:

- refused: the apiserver's message names a field path (spec..., metadata...);
- admitted: the operator's parse step (`Kind.from_body`) reads it, or refuses it with its own
  InvalidSpec (which the operator reports as Ready=False); the pure decisions that take the
  typed model (capacity planning for a pool, worker and delivery decisions for a job, scaling
  for a service, policy matching) run on it without an exception, within its bounds.

CI runs a bounded, derandomized profile: 60 examples a kind, the same ones on every run, so CI
is not flaky (about 30 s; against the CRDs and parser before the bounds, it finds the
999999999999h OverflowError). Run it long to hunt for new cases, with fresh random examples:

    SPARSAM_FUZZ_PROFILE=long pytest tests/integration/test_fuzz_schemas.py

(5000 examples a kind, an hour or more; SPARSAM_FUZZ_EXAMPLES=N sets another count; add
-k GPUNodePool for one kind). Hypothesis prints the smallest failing object; nothing is stored
in the repository (the profiles keep no example database).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from tests.conftest import Cluster

from sparsam.api import constants as c
from sparsam.api.costpolicy import CostPolicy
from sparsam.api.gpunodepool import GPUNodePool
from sparsam.api.inferenceservice import InferenceService
from sparsam.api.parse import DURATION_PATTERN, QUANTITY_PATTERN, InvalidSpec
from sparsam.api.trainingjob import TrainingJob
from sparsam.decisions.capacity import plan_capacity
from sparsam.decisions.cluster import CapacityRules, ClusterState, Pool
from sparsam.decisions.delivery import decide_delivery, model_uri
from sparsam.decisions.effective_policy import resolve_policy
from sparsam.decisions.policy import effective_policy
from sparsam.decisions.scaling import MetricSample, ScalingInput, decide_scaling, spot_split
from sparsam.decisions.training import decide_workers, expired
from sparsam.kube.client import api_client
from sparsam.kube.inferenceservice import model_dir

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "default"  # dry-run stores nothing, so any existing namespace will do

settings.register_profile(
    "sparsam-fuzz-ci",
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    print_blob=True,
)
settings.register_profile(
    "sparsam-fuzz-long",
    max_examples=int(os.environ.get("SPARSAM_FUZZ_EXAMPLES", "5000")),
    derandomize=False,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    print_blob=True,
)
PROFILE = settings.get_profile(
    "sparsam-fuzz-long" if os.environ.get("SPARSAM_FUZZ_PROFILE") == "long" else "sparsam-fuzz-ci"
)

# --- values ---------------------------------------------------------------------------------

GOOD_DURATIONS = ["90s", "5m", "1h30m", "0.5h", "250ms", "1s", "720h", "43200m", "99999us"]
BAD_DURATIONS = [
    # Beyond Go's int64 nanoseconds (CEL's duration() fails), beyond Python's timedelta.
    "999999999999h",
    "9" * 31 + "h",
    "2562048h",
    "99999999999999999s",
    "999999999h",
    "99999h99999h",
    # Just beyond the bound, and not durations at all.
    "721h",
    "720h1ns",
    "172800000s",
    "0",
    "10",
    "-5m",
    "1d",
]
GOOD_LABEL_KEYS = ["team", "example.com/team", "a" * 63, "kubernetes.io/metadata.name", "A_b.c-1"]
BAD_LABEL_KEYS = ["bad key", "a/b/c", "-team", "x" * 64, "a" * 254 + "/x", "ключ", "", "/x"]
BAD_STRINGS = ["", " ", "ünïcødé ☃", "\u0000", "../../..", "pvc://claim/../../..", "$(rm -rf)"]
BAD_INTEGERS = [-1, 0, 1001, 2**31 - 1, 2**31, 3_000_000_000, 2**53 + 1, 2**63 - 1]
BAD_NUMBERS = [-1.0, -1e-9, 0.0, 1e10, 1e300, -1e300, 5e-324, 1.5]
WRONG_TYPES: list[Any] = ["1", 1, 1.5, True, [], {}, ["x"], {"a": 1}]

EXACTLY_ONE = re.compile(r"has\(self\.(\w+)\) != has\(self\.(\w+)\)")
#: Paths whose strings are URIs or file paths, and get '..' segments now and then.
PATH_LIKE = ("uri", "student", "path")


def _is_duration(schema: Mapping[str, Any]) -> bool:
    rules = [r.get("rule", "") for r in schema.get("x-kubernetes-validations", [])]
    return any(DURATION_PATTERN in rule for rule in rules)


@dataclass(frozen=True)
class Faults:
    """Where a drawn object breaks its schema: at the one path `at` (so that the rest is valid
    and the broken value can reach the parser), or anywhere, in `rate` percent of its values."""

    at: str | None = None
    rate: int = 0

    def on_the_way(self, path: str) -> bool:
        return self.at is not None and (self.at == path or self.at.startswith(f"{path}."))


@st.composite
def _object(draw: st.DrawFn, schema: Mapping[str, Any], path: str, faults: Faults) -> Any:
    """A value for `schema` at `path`, valid unless `faults` put one here."""

    def evil() -> bool:
        if faults.at is not None:
            return faults.at == path
        return faults.rate > 0 and draw(st.integers(0, 99)) < faults.rate

    broken = evil()
    if broken and draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(WRONG_TYPES))
    if schema.get("x-kubernetes-int-or-string"):
        return draw(_quantity(broken))
    kind = schema.get("type")
    if kind == "object":
        return draw(_fields(schema, path, faults, broken))
    if kind == "array":
        items = schema.get("items", {})
        most = min(int(schema.get("maxItems", 3)), 3)
        least = int(schema.get("minItems", 0))
        if broken:
            most = int(schema.get("maxItems", 3)) + 1
            least = most if most < 40 else 0
        elif faults.on_the_way(f"{path}[]"):
            least = max(least, 1)
        return draw(st.lists(_object(items, f"{path}[]", faults), min_size=least, max_size=most))
    if kind == "integer":
        return draw(_number(schema, integer=True, evil=broken))
    if kind == "number":
        return draw(_number(schema, integer=False, evil=broken))
    if kind == "boolean":
        return draw(st.booleans())
    return draw(_string(schema, path, broken))


@st.composite
def _fields(
    draw: st.DrawFn, schema: Mapping[str, Any], path: str, faults: Faults, broken: bool
) -> Any:
    properties: Mapping[str, Any] = schema.get("properties", {})
    if "additionalProperties" in schema:  # a string map: label keys and values
        keys = st.sampled_from(BAD_LABEL_KEYS if broken else GOOD_LABEL_KEYS)
        values = _object(schema["additionalProperties"], f"{path}.*", faults)
        return draw(st.dictionaries(keys, values, min_size=1 if broken else 0, max_size=3))
    required = [name for name in schema.get("required", []) if name in properties]
    if broken and required:
        required = required[1:]  # a required field left out
    # The fields on the way to the fault are always there, so the fault is too.
    present = required + [n for n in properties if faults.on_the_way(f"{path}.{n}")]
    absent: set[str] = set()
    for rule in schema.get("x-kubernetes-validations", []):
        # "Exactly one of a or b" (has(self.a) != has(self.b)): mostly kept, so that objects
        # get past it to the rest of their checks.
        pair = EXACTLY_ONE.fullmatch(rule.get("rule", ""))
        if pair and not broken and not set(pair.groups()) & set(present):
            chosen = draw(st.sampled_from(pair.groups()))
            present.append(chosen)
            absent |= set(pair.groups()) - {chosen}
    return draw(
        st.fixed_dictionaries(
            {name: _object(properties[name], f"{path}.{name}", faults) for name in present},
            optional={
                name: _object(prop, f"{path}.{name}", faults)
                for name, prop in properties.items()
                if name not in present
                and name not in absent
                and name not in schema.get("required", [])
            },
        )
    )


def _paths(schema: Mapping[str, Any], path: str) -> list[str]:
    """Every place in `schema` a fault can go."""
    found = [path]
    for name, prop in schema.get("properties", {}).items():
        found += _paths(prop, f"{path}.{name}")
    if "items" in schema:
        found += _paths(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        found.append(f"{path}.*")
    return found


def _number(schema: Mapping[str, Any], *, integer: bool, evil: bool) -> st.SearchStrategy[Any]:
    low = schema.get("minimum", 0)
    high = schema.get("maximum", 10**6)
    if evil:
        beyond = [high + 1, low - 1] + (BAD_INTEGERS if integer else BAD_NUMBERS)
        return st.sampled_from(beyond)
    if integer:
        return st.one_of(st.sampled_from([low, high]), st.integers(low, high))
    return st.one_of(
        st.sampled_from([v for v in (low, high) if v not in _excluded(schema)] or [high / 2]),
        st.floats(
            low,
            high,
            exclude_min=bool(schema.get("exclusiveMinimum")),
            exclude_max=bool(schema.get("exclusiveMaximum")),
            allow_nan=False,
        ),
    )


def _excluded(schema: Mapping[str, Any]) -> set[Any]:
    out = set()
    if schema.get("exclusiveMinimum"):
        out.add(schema.get("minimum"))
    if schema.get("exclusiveMaximum"):
        out.add(schema.get("maximum"))
    return out


def _quantity(evil: bool) -> st.SearchStrategy[Any]:
    if evil:
        return st.sampled_from(["lots", "1e3", "-1", "9" * 60 + "Ei", 2**63 - 1, -1, "1.5.5", ""])
    return st.one_of(st.integers(0, 10**6), st.from_regex(QUANTITY_PATTERN, fullmatch=True))


def _string(schema: Mapping[str, Any], path: str, evil: bool) -> st.SearchStrategy[Any]:
    longest = int(schema.get("maxLength", 64))
    leaf = path.rsplit(".", 1)[-1]
    if _is_duration(schema) or leaf == "interval":
        if evil:
            return st.sampled_from(BAD_DURATIONS)
        return st.sampled_from([*GOOD_DURATIONS, "auto"] if leaf == "interval" else GOOD_DURATIONS)
    if "enum" in schema:
        if evil:
            return st.sampled_from(["", "none of these", str(schema["enum"][0]).lower() + "x"])
        return st.sampled_from(schema["enum"])
    if evil:
        overlong = "x" * (longest + 1)
        dots = [f"pvc://models/{'../' * 3}x", "/checkpoints/../etc"] if leaf in PATH_LIKE else []
        return st.sampled_from([*BAD_STRINGS, overlong, *dots])
    if leaf == "uri":
        return st.from_regex(r"\Apvc://[a-z0-9]{1,10}(/[a-z0-9._-]{1,12}){0,3}\Z")
    if leaf == "path":
        return st.from_regex(r"\A(/[a-z0-9._-]{1,12}){1,3}\Z")
    if "pattern" in schema:
        # The apiserver's $ (RE2) is the end of the text; Python's also matches before a "\n".
        pattern = re.sub(r"\$$", r"\\Z", schema["pattern"])
        return st.from_regex(pattern).filter(
            lambda s: int(schema.get("minLength", 0)) <= len(s) <= longest
        )
    if leaf == "key":
        return st.sampled_from(GOOD_LABEL_KEYS)
    return st.text(
        st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
        min_size=max(int(schema.get("minLength", 0)), 1 if "name" in leaf.lower() else 0),
        max_size=min(longest, 24),
    )


# --- kinds ----------------------------------------------------------------------------------


def _schema(resource: c.Resource) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / f"{c.GROUP}_{resource.plural}.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == c.VERSION]
    return dict(version["schema"]["openAPIV3Schema"])


def _examples(resource: c.Resource) -> list[dict[str, Any]]:
    """The kind's documents in examples/: valid objects to break one field of."""
    found = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        found += [
            d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == resource.kind
        ]
    assert found, f"examples/ has no {resource.kind}"
    return found


def _at(schema: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """The schema of the place `path` ("spec.workers.max", "spec.env[]", "spec.labels.*")."""
    for part in _parts(path)[1:]:
        if part == "[]":
            schema = schema["items"]
        elif part == "*":
            schema = schema["additionalProperties"]
        else:
            schema = schema["properties"][part]
    return schema


def _parts(path: str) -> list[str]:
    return re.findall(r"\[\]|[^.\[\]]+", path)


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    """Put `value` at `path` of `body`, making the objects and lists on the way (the first
    item of a list; the key "team" of a map)."""
    parts = ["team" if p == "*" else p for p in _parts(path)]
    node: Any = body
    for part, after in pairwise(parts):
        empty: Any = [] if after == "[]" else {}
        if part == "[]":
            if not node:
                node.append(empty)
            elif not isinstance(node[0], type(empty)):
                node[0] = empty
            node = node[0]
        else:
            if not isinstance(node.get(part), type(empty)):
                node[part] = empty
            node = node[part]
    if parts[-1] == "[]":
        node[:1] = [value]
    else:
        node[parts[-1]] = value


@st.composite
def manifests(draw: st.DrawFn, resource: c.Resource) -> dict[str, Any]:
    """An object of the kind: drawn whole from the schema (valid, or with faults anywhere), or
    an example with one value replaced (by a valid one, often at a bound, or a broken one)."""
    spec_schema = _schema(resource)["properties"]["spec"]
    mode = draw(
        st.sampled_from(["drawn", "drawn with faults", "one value", "one fault", "one fault"])
    )
    if mode.startswith("drawn"):
        faults = Faults(rate=10 if mode == "drawn with faults" else 0)
        return {
            "apiVersion": c.API_VERSION,
            "kind": resource.kind,
            "metadata": {"name": f"fuzz-{resource.singular}"},
            "spec": draw(_object(spec_schema, "spec", faults)),
        }
    manifest = copy.deepcopy(draw(st.sampled_from(_examples(resource))))
    manifest["metadata"] = {"name": f"fuzz-{resource.singular}"}
    # Mostly a leaf (a number, a string, a map), where a value the parser cannot take hides.
    paths = _paths(spec_schema, "spec")[1:]
    leaves = [p for p in paths if _at(spec_schema, p).get("type") not in ("object", "array")]
    path = draw(st.sampled_from(draw(st.sampled_from([leaves, leaves, paths]))))
    faults = Faults(at=path if mode == "one fault" else None)
    _set(manifest, path, draw(_object(_at(spec_schema, path), path, faults)))
    return manifest


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def consume_pool(body: Mapping[str, Any]) -> None:
    pool = GPUNodePool.from_body(body)
    # A pass plans minNodes nodes for the pool: a bounded list, whatever the spec says.
    plan = plan_capacity(ClusterState(pools=(Pool.from_gpunodepool(pool),)), NOW)
    assert sum(plan.add.values()) <= pool.spec.max_nodes


def consume_service(body: Mapping[str, Any]) -> None:
    service = InferenceService.from_body(body)
    spec = service.spec
    model_dir(spec.model.uri)
    for load in (None, 0.0, 1e9):
        decision = decide_scaling(
            ScalingInput(spec, replicas=1, ready_replicas=1, sample=MetricSample(load)), NOW
        )
        assert 0 <= decision.replicas <= spec.replicas.max
        spot_split(decision.replicas, spec.capacity.on_demand_base, spec.capacity.spot)


def consume_job(body: Mapping[str, Any]) -> None:
    job = TrainingJob.from_body(body)
    decision = decide_workers(job, (), NOW)
    assert len(decision.create) <= job.spec.workers.max
    decide_delivery(job, None)
    model_uri(job)
    expired(job, NOW)
    if job.spec.checkpoint is not None:
        job.spec.checkpoint.interval_duration  # noqa: B018 - must not raise once parsed


def consume_policy(body: Mapping[str, Any]) -> None:
    policy = CostPolicy.from_body(body)
    effective_policy([policy], {"team": "newsroom", "kubernetes.io/metadata.name": "ml"})
    CapacityRules.from_policy(resolve_policy(policy))


CONSUMERS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    c.GPU_NODE_POOL.kind: consume_pool,
    c.INFERENCE_SERVICE.kind: consume_service,
    c.TRAINING_JOB.kind: consume_job,
    c.COST_POLICY.kind: consume_policy,
}

#: A refusal names the field: "spec.workers.max: Invalid value", "metadata.name must ...".
NAMES_A_FIELD = re.compile(r"\b(spec|metadata)(\.|\[|:|\b)")


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[CustomObjectsApi]:
    client: ApiClient = api_client(cluster.kubeconfig)
    yield CustomObjectsApi(client)
    client.close()


def _dry_run(api: CustomObjectsApi, resource: c.Resource, body: dict[str, Any]) -> Any:
    args = (c.GROUP, c.VERSION)
    if resource.namespaced:
        return api.create_namespaced_custom_object(
            *args, NAMESPACE, resource.plural, body, dry_run="All", field_validation="Strict"
        )
    return api.create_cluster_custom_object(
        *args, resource.plural, body, dry_run="All", field_validation="Strict"
    )


def _check(api: CustomObjectsApi, resource: c.Resource, manifest: dict[str, Any]) -> str:
    """What became of `manifest`: "refused", "admitted" or "invalid" (the parser refused it)."""
    try:
        admitted = _dry_run(api, resource, manifest)
    except ApiException as exc:
        assert exc.status in (400, 422), f"{exc.status}: {exc.body}"
        status = json.loads(exc.body)
        causes = [cause.get("field", "") for cause in status.get("details", {}).get("causes", [])]
        named = any(NAMES_A_FIELD.match(f) for f in causes) or NAMES_A_FIELD.search(
            status.get("message", "")
        )
        assert named, f"refused without naming a field: {status.get('message')}"
        return "refused"
    try:
        CONSUMERS[resource.kind](admitted)
    except InvalidSpec as exc:
        # The project's own refusal: the operator reports it (Ready=False, reason InvalidSpec).
        assert NAMES_A_FIELD.match(exc.path), exc
        return "invalid"
    return "admitted"


@pytest.mark.parametrize("resource", c.RESOURCES, ids=[r.kind for r in c.RESOURCES])
def test_generated_objects_are_refused_naming_a_field_or_handled(
    api: CustomObjectsApi, resource: c.Resource
) -> None:
    outcomes: Counter[str] = Counter()

    @PROFILE
    @given(manifests(resource))
    def check(manifest: dict[str, Any]) -> None:
        outcome = _check(api, resource, manifest)
        event(outcome)
        outcomes[outcome] += 1

    check()
    # Both sides were exercised: a generator that only ever breaks (or never breaks) the
    # schema would pass the property without testing the parser (or the apiserver's checks).
    assert outcomes["admitted"] > 0 and outcomes["refused"] > 0, outcomes
