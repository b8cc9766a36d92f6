"""crds/ is the single source of truth for the API; the typed models in sparsam.api must agree
with it field by field: names, types, required-ness, enums and defaults, spec and status."""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import yaml

from sparsam.api import constants as c
from sparsam.api.parse import (
    DURATION_DIGITS,
    DURATION_PATTERN,
    MAX_DURATION_TEXT,
    QUANTITY_PATTERN,
    JsonObject,
    Quantity,
    field_json_name,
    field_maximum,
    field_minimum,
    from_raw,
    read_value,
)

ROOT = Path(__file__).resolve().parents[2]
SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _crd(resource: c.Resource) -> dict[str, Any]:
    path = ROOT / "crds" / f"{c.GROUP}_{resource.plural}.yaml"
    return dict(yaml.safe_load(path.read_text()))


def _schema(resource: c.Resource) -> dict[str, Any]:
    versions = _crd(resource)["spec"]["versions"]
    (served,) = [v for v in versions if v["name"] == c.VERSION]
    return dict(served["schema"]["openAPIV3Schema"])


def _models(resource: c.Resource) -> tuple[type[Any], type[Any]]:
    module = importlib.import_module(f"sparsam.api.{resource.singular}")
    return getattr(module, f"{resource.kind}Spec"), getattr(module, f"{resource.kind}Status")


def _unwrap_optional(hint: Any) -> Any:
    if get_origin(hint) in (typing.Union, __import__("types").UnionType):
        (inner,) = [a for a in get_args(hint) if a is not type(None)]
        return inner
    return hint


def _is_empty(value: Any, hint: Any) -> bool:
    if value is None or value == () or value == {}:
        return True
    hint = _unwrap_optional(hint)
    return dataclasses.is_dataclass(hint) and value == from_raw(hint, {}, "x")


def _disagreements(hint: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    hint = _unwrap_optional(hint)
    kind = schema.get("type")
    if dataclasses.is_dataclass(hint):
        return _object_disagreements(typing.cast(type[Any], hint), schema, path)
    if get_origin(hint) is Literal:
        enum = schema.get("enum")
        ok = enum is not None and set(enum) == set(get_args(hint))
        return [] if ok else [f"{path}: enum {enum} != Literal{list(get_args(hint))}"]
    if get_origin(hint) is tuple:
        if kind != "array":
            return [f"{path}: model has a list, CRD has {kind}"]
        return _disagreements(get_args(hint)[0], schema.get("items", {}), f"{path}[]")
    if hint is JsonObject or get_origin(hint) is Mapping:
        return [] if kind == "object" else [f"{path}: model has an object, CRD has {kind}"]
    if hint is Quantity:
        # The apiserver must accept exactly what Quantity.parse reads.
        ok = (
            schema.get("x-kubernetes-int-or-string") is True
            and schema.get("pattern") == QUANTITY_PATTERN
        )
        return [] if ok else [f"{path}: a quantity must be int-or-string with QUANTITY_PATTERN"]
    if hint is timedelta:
        # The apiserver must accept exactly what parse_duration reads.
        rules = [rule["rule"] for rule in schema.get("x-kubernetes-validations", [])]
        ok = kind == "string" and any(f"r'{DURATION_PATTERN}'" in rule for rule in rules)
        if not ok:
            return [f"{path}: a duration must be matched against DURATION_PATTERN"]
        # ... and bounded as parse_duration bounds it, with the digits guard before duration().
        guarded = DURATION_PATTERN.replace("[0-9]+(", f"[0-9]{{1,{DURATION_DIGITS}}}(", 1)
        bound = f"duration(self) <= duration('{MAX_DURATION_TEXT}')"
        ok = any(f"r'{guarded}'" in rule and bound in rule for rule in rules)
        return [] if ok else [f"{path}: a duration must be at most {MAX_DURATION_TEXT}"]
    if hint in SCALARS:
        expected = SCALARS[hint]
        # A float field may be declared as a number; JSON integers are numbers too.
        ok = kind == expected or (hint is float and kind in ("number", "integer"))
        return [] if ok else [f"{path}: model has {expected}, CRD has {kind}"]
    return [f"{path}: the model's type {hint!r} has no CRD counterpart"]


def _object_disagreements(cls: type[Any], schema: Mapping[str, Any], path: str) -> list[str]:
    if schema.get("type") != "object":
        return [f"{path}: model has an object, CRD has {schema.get('type')}"]
    properties = schema.get("properties", {})
    fields = {field_json_name(f): f for f in dataclasses.fields(cls)}
    problems = [
        f"{path}.{n}: in the CRD, not in {cls.__name__}" for n in properties if n not in fields
    ]
    problems += [
        f"{path}.{n}: in {cls.__name__}, not in the CRD" for n in fields if n not in properties
    ]
    required = set(schema.get("required", []))
    hints = typing.get_type_hints(cls)
    for name, f in fields.items():
        if name not in properties:
            continue
        prop = properties[name]
        has_default = not (
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if has_default == (name in required):
            problems.append(f"{path}.{name}: required in the CRD iff it has no model default")
        problems += _disagreements(hints[f.name], prop, f"{path}.{name}")
        problems += _bound_disagreements(hints[f.name], f, prop, f"{path}.{name}")
        if has_default:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if "default" in prop:
                crd_default = read_value(hints[f.name], prop["default"], f"{path}.{name}")
                if crd_default != default:
                    problems.append(
                        f"{path}.{name}: CRD default {prop['default']!r} != model "
                        f"default {default!r}"
                    )
            elif not _is_empty(default, hints[f.name]):
                problems.append(f"{path}.{name}: model default {default!r} but no CRD default")
    return problems


def _bound_disagreements(
    hint: Any, f: dataclasses.Field[Any], prop: Mapping[str, Any], path: str
) -> list[str]:
    """Every number of a spec has an upper bound, the same in the CRD and the model (status is
    the operator's own writing, so only a bound the model declares is compared there)."""
    declared = field_maximum(f)
    if _unwrap_optional(hint) is Quantity:
        rules = [rule["rule"] for rule in prop.get("x-kubernetes-validations", [])]
        bounds = [m for rule in rules for m in re.findall(r"<= 0|quantity\('([^']+)'\)", rule) if m]
        if declared is None or [Quantity.parse(b) for b in bounds] != [declared]:
            return [f"{path}: CRD quantity bounds {bounds} != model at_most({declared})"]
        if f"At most {bounds[0]}" not in " ".join(prop.get("description", "").split()):
            return [f"{path}: the description does not state the bound {bounds[0]}"]
        return []
    if _unwrap_optional(hint) not in (int, float) or (
        not path.startswith("spec") and declared is None
    ):
        return []
    if "maximum" not in prop:
        return [f"{path}: a number without a maximum in the CRD"]
    least = field_minimum(f)
    # A fractional floor is a CEL rule: the apiserver truncates `minimum: 0.001` to 0 for an
    # integer value, so 0 would pass it.
    rules = [rule["rule"] for rule in prop.get("x-kubernetes-validations", [])]
    if least is not None and f"self >= {least}" not in rules:
        return [f"{path}: no CEL rule 'self >= {least}' for the model's at_least"]
    if declared != prop["maximum"]:
        return [f"{path}: CRD maximum {prop['maximum']} != model at_most({declared})"]
    if not re.search(rf"(?<![.\d]){prop['maximum']}(?!\.?\d)", prop.get("description", "")):
        return [f"{path}: the description does not state the bound {prop['maximum']}"]
    return []


@pytest.mark.parametrize("resource", c.RESOURCES, ids=[r.kind for r in c.RESOURCES])
@pytest.mark.parametrize("part", ["spec", "status"])
def test_models_agree_with_the_crd(resource: c.Resource, part: str) -> None:
    spec_cls, status_cls = _models(resource)
    schema = _schema(resource)["properties"][part]
    problems = _disagreements(spec_cls if part == "spec" else status_cls, schema, part)
    assert problems == []


@pytest.mark.parametrize("resource", c.RESOURCES, ids=[r.kind for r in c.RESOURCES])
def test_crd_names_match_the_constants(resource: c.Resource) -> None:
    crd = _crd(resource)
    assert crd["metadata"]["name"] == resource.crd_name
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        resource.kind,
        resource.plural,
        resource.singular,
    )
    assert tuple(names["shortNames"]) == resource.short_names
    assert crd["spec"]["group"] == c.GROUP
    assert crd["spec"]["scope"] == ("Namespaced" if resource.namespaced else "Cluster")


def _walk(schema: Mapping[str, Any], path: str) -> list[tuple[str, Mapping[str, Any]]]:
    found = [(path, schema)]
    for name, prop in schema.get("properties", {}).items():
        found += _walk(prop, f"{path}.{name}")
    if "items" in schema:
        found += _walk(schema["items"], f"{path}[]")
    return found


@pytest.mark.parametrize("resource", c.RESOURCES, ids=[r.kind for r in c.RESOURCES])
def test_every_field_has_a_description(resource: c.Resource) -> None:
    schema = _schema(resource)
    missing = [
        path
        for path, prop in _walk(schema["properties"]["spec"], "spec")
        + _walk(schema["properties"]["status"], "status")
        if not prop.get("description", "").strip()
    ]
    assert missing == []


@pytest.mark.parametrize("resource", c.RESOURCES, ids=[r.kind for r in c.RESOURCES])
def test_unknown_fields_are_pruned_everywhere(resource: c.Resource) -> None:
    # An object without properties keeps nothing either; only this marker keeps unknown fields.
    schema = _schema(resource)
    kept = [
        path for path, prop in _walk(schema, "") if prop.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert kept == []


@pytest.mark.parametrize("resource", c.RESOURCES, ids=[r.kind for r in c.RESOURCES])
def test_cel_messages_name_a_field(resource: c.Resource) -> None:
    schema = _schema(resource)
    rules = [
        rule for _, prop in _walk(schema, "") for rule in prop.get("x-kubernetes-validations", [])
    ]
    assert rules, "every kind has CEL validations"
    for rule in rules:
        message = rule.get("message") or rule.get("messageExpression", "")
        assert any(root in message for root in ("spec.", "status.", "metadata.")), rule


@pytest.mark.parametrize("resource", c.RESOURCES, ids=[r.kind for r in c.RESOURCES])
def test_status_subresource_and_printer_columns(resource: c.Resource) -> None:
    (version,) = _crd(resource)["spec"]["versions"]
    assert "status" in version["subresources"]
    columns = [col["name"] for col in version["additionalPrinterColumns"]]
    assert columns[-1] == "Age"
