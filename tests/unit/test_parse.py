from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Literal

import pytest

from sparsam.api.parse import (
    MAX_DURATION,
    InvalidSpec,
    Quantity,
    at_most,
    format_duration,
    from_raw,
    json_name,
    parse_duration,
    refuse_dot_segments,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("0.5h", timedelta(minutes=30)),
        ("250ms", timedelta(milliseconds=250)),
    ],
    ids=["zero", "seconds", "minutes", "compound", "fraction", "millis"],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "1d", "-5m", "5M"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["720h", "43200m", "719h59m60s", "2592000s"])
def test_parse_duration_takes_the_bound(text: str) -> None:
    assert parse_duration(text) == MAX_DURATION == timedelta(hours=720)


@pytest.mark.parametrize(
    "text",
    ["721h", "720h1ns", "999999999999h", "9" * 400 + "h", "99999h99999h", "2562048h"],
    ids=["just-above", "one-ns-above", "beyond-go", "beyond-float", "sum-above", "beyond-int64"],
)
def test_parse_duration_refuses_beyond_the_bound_with_a_value_error(text: str) -> None:
    # ValueError (which from_raw turns into InvalidSpec), never OverflowError.
    with pytest.raises(ValueError, match=r"is longer than 720h$"):
        parse_duration(text)


def test_parse_duration_without_a_maximum_still_never_overflows() -> None:
    assert parse_duration("999999h", maximum=None) == timedelta(hours=999999)
    with pytest.raises(ValueError, match="longer than what a duration can hold"):
        parse_duration("999999999999h", maximum=None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(timedelta(0), "0s"), (timedelta(seconds=90), "1m30s"), (timedelta(hours=2), "2h")],
)
def test_format_duration_round_trips(value: timedelta, expected: str) -> None:
    assert format_duration(value) == expected
    assert parse_duration(expected) == value


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("500m", Decimal("0.5")),
        ("4", Decimal(4)),
        (4, Decimal(4)),
        ("16Gi", Decimal(16 * 2**30)),
        ("1.5G", Decimal(1_500_000_000)),
    ],
    ids=["millicores", "string-int", "int", "binary", "decimal-suffix"],
)
def test_quantity(raw: str | int, expected: Decimal) -> None:
    assert Quantity.parse(raw) == expected


@pytest.mark.parametrize("raw", ["", "1.5.5", "Gi", "-1", "4 Gi", True])
def test_quantity_rejects(raw: str | bool) -> None:
    with pytest.raises(ValueError, match="quantity"):
        Quantity.parse(raw)


@dataclass(frozen=True, slots=True)
class Inner:
    min: int
    max: int = 4


@dataclass(frozen=True, slots=True)
class Outer:
    inner: Inner
    mode: Literal["Prefer", "Never"] = "Prefer"
    after: timedelta = timedelta(minutes=5)
    cpu: Quantity | None = None
    tags: tuple[str, ...] = ()
    gpu_types: tuple[str, ...] = json_name("allowedGPUTypes", default=())
    nested: Inner = field(default_factory=lambda: Inner(min=1))


def test_from_raw_applies_defaults_and_names() -> None:
    parsed = from_raw(Outer, {"inner": {"min": 2}, "allowedGPUTypes": ["A10G"]}, "spec")
    assert parsed == Outer(inner=Inner(min=2, max=4), gpu_types=("A10G",))


def test_from_raw_reads_every_type() -> None:
    raw = {
        "inner": {"min": 1, "max": 2},
        "mode": "Never",
        "after": "90s",
        "cpu": "500m",
        "tags": ["a", "b"],
    }
    parsed = from_raw(Outer, raw, "spec")
    assert parsed.after == timedelta(seconds=90)
    assert parsed.cpu == Decimal("0.5")
    assert parsed.tags == ("a", "b")
    assert parsed.mode == "Never"


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({}, "spec.inner"),
        ({"inner": {"min": "one"}}, "spec.inner.min"),
        ({"inner": {"min": 1}, "mode": "Always"}, "spec.mode"),
        ({"inner": {"min": 1}, "after": "soon"}, "spec.after"),
        ({"inner": {"min": 1}, "tags": "a"}, "spec.tags"),
        ({"inner": {"min": 1}, "tags": ["a", 3]}, "spec.tags[1]"),
        ({"inner": []}, "spec.inner"),
        ({"inner": {"min": True}}, "spec.inner.min"),
    ],
    ids=[
        "missing-required",
        "wrong-int",
        "bad-enum",
        "bad-duration",
        "not-a-list",
        "bad-item",
        "not-an-object",
        "bool-is-not-int",
    ],
)
def test_from_raw_names_the_field(raw: dict[str, object], path: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        from_raw(Outer, raw, "spec")
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")


@dataclass(frozen=True, slots=True)
class Bounded:
    count: int = field(default=1, metadata=at_most(10))
    price: float | None = field(default=None, metadata=at_most(2.5))
    ratio: float = field(default=1.0, metadata=at_most(10, at_least=0.001))
    after: timedelta = timedelta(minutes=1)


def test_from_raw_takes_values_at_the_bound() -> None:
    assert from_raw(Bounded, {"count": 10, "price": 2.5}, "spec") == Bounded(10, 2.5)


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        ({"count": 11}, "spec.count", "must be at most 10, not 11"),
        ({"count": 2**63}, "spec.count", "must be at most 10"),
        ({"price": 2.6}, "spec.price", "must be at most 2.5"),
        ({"price": 10**400}, "spec.price", "must be a number a float holds"),
        ({"after": "999999999999h"}, "spec.after", "is longer than 720h"),
        ({"ratio": 5e-324}, "spec.ratio", "must be at least 0.001, not 5e-324"),
    ],
    ids=["int", "int64", "float", "beyond-float", "duration", "below-minimum"],
)
def test_from_raw_refuses_beyond_the_bound(raw: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        from_raw(Bounded, raw, "spec")
    assert info.value.path == path
    assert message in info.value.message


@pytest.mark.parametrize("value", ["pvc://claim/../../..", "pvc://m/a/..", "../x", "/c/../etc"])
def test_refuse_dot_segments(value: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        refuse_dot_segments("spec.x", value)
    assert str(info.value).startswith("spec.x: must not contain '..' path segments")


@pytest.mark.parametrize("value", ["pvc://models/a..b", "pvc://m/.../x", "/checkpoints", "a."])
def test_refuse_dot_segments_lets_dots_in_names_pass(value: str) -> None:
    refuse_dot_segments("spec.x", value)
