"""Parse raw Kubernetes bodies into the frozen dataclasses of sparsam.api.

The models declare their shape once, as typed dataclass fields; this module reads a raw body
(the dict Kopf or the Kubernetes client hands us) into them, applying the dataclass defaults for
absent fields. Those defaults mirror the CRD's `default:` values, which the apiserver applies
first; a test walks both and fails when they drift apart.

Field names are the snake_case of the JSON camelCase name; where that rule does not hold
(`allowedGPUTypes`), the field says so with `json_name("allowedGPUTypes")`.

Supported field types: bool, int, float, str, Literal[...] (enums), timedelta (a Go duration
string such as "90s" or "1h30m"), Quantity (a Kubernetes quantity such as "500m" or "16Gi"),
nested model dataclasses, tuple[X, ...] (arrays), Mapping[str, str] (string maps),
JsonObject (an embedded Kubernetes type kept as it is, e.g. tolerations), and `X | None`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar, cast, get_args, get_origin

T = TypeVar("T")

#: An embedded object whose schema is Kubernetes' own (a toleration, an env var, a selector).
JsonObject = Mapping[str, Any]

_JSON_NAME = "json_name"
_MAXIMUM = "maximum"
_MINIMUM = "minimum"


class InvalidSpec(ValueError):
    """A raw body does not fit the model. `path` names the field, as `kubectl explain` does."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def json_name(name: str, **kwargs: Any) -> Any:
    """Metadata for a field whose JSON name is not the camelCase of its Python name."""
    metadata = dict(kwargs.pop("metadata", {}))
    metadata[_JSON_NAME] = name
    return dataclasses.field(metadata=metadata, **kwargs)


def at_most(maximum: int | float, at_least: int | float | None = None) -> dict[str, Any]:
    """Field metadata for a number with the CRD's `maximum:` (and `minimum:` where a value
    near zero would be divided by), as in `field(default=1, metadata=at_most(1000))`.
    `from_raw` refuses values outside, so a body that skipped the apiserver's check (an object
    stored under an older CRD) never makes a huge pass."""
    bounds: dict[str, Any] = {_MAXIMUM: maximum}
    if at_least is not None:
        bounds[_MINIMUM] = at_least
    return bounds


def field_maximum(f: dataclasses.Field[Any]) -> int | float | None:
    """The `at_most` bound of a field, or None."""
    found: int | float | None = f.metadata.get(_MAXIMUM)
    return found


def field_minimum(f: dataclasses.Field[Any]) -> int | float | None:
    """The `at_least` bound of a field, or None."""
    found: int | float | None = f.metadata.get(_MINIMUM)
    return found


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def field_json_name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get(_JSON_NAME, camel(f.name)))


# --- Go durations -------------------------------------------------------------------------

#: Nanoseconds per unit: sums are exact, so 720h1ns is above 720h, as it is for Go and CEL.
_DURATION_NANOS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
#: The same grammar the CRDs enforce with CEL (`DURATION_PATTERN` there must match this).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
#: The longest duration any spec field takes (30 days); the CRDs refuse longer ones with CEL.
MAX_DURATION = timedelta(hours=720)
#: The same bound as the CRDs write it, in Go syntax, for `duration('720h')` and messages.
MAX_DURATION_TEXT = "720h"
#: Digits before the point of each number of a spec duration, at most. The CRDs' CEL needs
#: this guard: `duration()` fails on a value beyond Go's 292 years, and a failed rule reports
#: an evaluation error instead of the rule's message; five digits in a 32-character string sum
#: to at most 500000h, which Go reads.
DURATION_DIGITS = 5


def parse_duration(text: str, maximum: timedelta | None = MAX_DURATION) -> timedelta:
    """Parse a Go duration ("90s", "1h30m", "0.5h") into a timedelta; "0" alone is zero.

    Raises ValueError for other text and for a duration above `maximum` (None: only above what
    a timedelta holds), never OverflowError, however many digits the text has."""
    if text == "0":
        return timedelta(0)
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 90s, 5m or 1h30m")
    nanos = sum(
        Decimal(number) * _DURATION_NANOS[unit] for number, unit in _DURATION_PART.findall(text)
    )
    limit = timedelta.max if maximum is None else maximum
    if nanos > _micros(limit) * 1000:
        bound = "what a duration can hold" if maximum is None else format_duration(maximum)
        raise ValueError(f"{text[:40]!r} is longer than {bound}")
    return timedelta(microseconds=round(nanos / 1000))


def _micros(value: timedelta) -> int:
    return (value.days * 86400 + value.seconds) * 10**6 + value.microseconds


def format_duration(value: timedelta) -> str:
    """The shortest Go duration for whole seconds ("1h30m", "90s" -> "1m30s")."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)


def refuse_dot_segments(path: str, value: str) -> None:
    """Refuse a '..' segment in a path or URI (`pvc://claim/../..`), as the CRDs' CEL does: the
    path must stay inside the volume it names."""
    if ".." in value.split("/"):
        raise InvalidSpec(path, f"must not contain '..' path segments, not {value!r}")


# --- Kubernetes quantities ----------------------------------------------------------------

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
#: The most cpu (cores) and memory (bytes) any spec asks for, per node or per pod; the CRDs
#: write them as quantity('1024') and quantity('16Ti') in CEL.
MAX_CPU = 1024
MAX_MEMORY = 16 * 2**40
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


class Quantity(Decimal):
    """A Kubernetes resource quantity as a number: "500m" is 0.5, "16Gi" is 17179869184."""

    @classmethod
    def parse(cls, value: str | int | float) -> Quantity:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a quantity")
        if isinstance(value, int | float):
            return cls(str(value))
        match = re.fullmatch(QUANTITY_PATTERN, value)
        if not match:
            raise ValueError(f"{value!r} is not a quantity such as 500m, 4 or 16Gi")
        suffix = match.group(2) or ""
        number = value[: len(value) - len(suffix)]
        try:
            base = Decimal(number)
        except InvalidOperation as exc:  # pragma: no cover - the pattern already checked it
            raise ValueError(f"{value!r} is not a quantity") from exc
        scale = Decimal(_BINARY[suffix]) if suffix in _BINARY else _DECIMAL[suffix]
        return cls(base * scale)


# --- the generic reader -------------------------------------------------------------------


def from_raw(cls: type[T], raw: Any, path: str) -> T:
    """Read `raw` into the dataclass `cls`; `path` is where `raw` sits ("spec", "spec.workers")."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InvalidSpec(path, f"must be an object, not {type(raw).__name__}")
    values: dict[str, Any] = {}
    for name, key, hint, required, (least, most) in _fields(cls):
        if key in raw and raw[key] is not None:
            value = values[name] = read_value(hint, raw[key], f"{path}.{key}")
            if most is not None and value > most:
                raise InvalidSpec(f"{path}.{key}", f"must be at most {most}, not {value}")
            if least is not None and value < least:
                raise InvalidSpec(f"{path}.{key}", f"must be at least {least}, not {value}")
        elif required:
            raise InvalidSpec(f"{path}.{key}", "is required")
    return cls(**values)


Field = tuple[str, str, Any, bool, tuple[int | float | None, int | float | None]]
#: Per dataclass: (name, JSON name, type, required, (minimum, maximum)) of each field.
_FIELDS: dict[type[Any], tuple[Field, ...]] = {}


def _fields(cls: type[Any]) -> tuple[Field, ...]:
    """The fields of `cls` as `from_raw` reads them, resolved once per class: resolving the
    annotations (strings, under `from __future__ import annotations`) compiles each of them,
    which made reading a TrainingJob cost 1.7 ms, for every object on every pass."""
    found = _FIELDS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = _FIELDS[cls] = tuple(
            (
                f.name,
                field_json_name(f),
                hints[f.name],
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                (field_minimum(f), field_maximum(f)),
            )
            for f in dataclasses.fields(cls)
        )
    return found


def read_value(hint: Any, raw: Any, path: str) -> Any:
    """Read one JSON value into the Python type `hint` (see the module doc for what is known)."""
    origin = get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        inner = [arg for arg in get_args(hint) if arg is not type(None)]
        return read_value(inner[0], raw, path)
    if origin is Literal:
        if raw not in get_args(hint):
            allowed = ", ".join(str(a) for a in get_args(hint))
            raise InvalidSpec(path, f"must be one of {allowed}, not {raw!r}")
        return raw
    if origin is tuple:
        if not isinstance(raw, list):
            raise InvalidSpec(path, "must be a list")
        (item,) = get_args(hint)[:1]
        return tuple(read_value(item, value, f"{path}[{i}]") for i, value in enumerate(raw))
    if origin is Mapping or hint is JsonObject:
        if not isinstance(raw, Mapping):
            raise InvalidSpec(path, "must be an object")
        return dict(raw)
    if dataclasses.is_dataclass(hint):
        return from_raw(cast(type[Any], hint), raw, path)
    if hint is Any:
        return raw
    try:
        return _read_scalar(hint, raw)
    except ValueError as exc:
        raise InvalidSpec(path, str(exc)) from None


def _read_scalar(hint: Any, raw: Any) -> Any:
    if hint is bool:
        if not isinstance(raw, bool):
            raise ValueError(f"must be true or false, not {raw!r}")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"must be an integer, not {raw!r}")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"must be a number, not {raw!r}")
        try:
            value = float(raw)
        except OverflowError:  # an integer beyond 1.8e308
            raise ValueError(f"must be a number a float holds, not {raw}") from None
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, not {raw!r}")
        return value
    if hint is str:
        if not isinstance(raw, str):
            raise ValueError(f"must be a string, not {raw!r}")
        return raw
    if hint is timedelta:
        if not isinstance(raw, str):
            raise ValueError(f"must be a duration string such as 5m, not {raw!r}")
        return parse_duration(raw)
    if hint is Quantity:
        return Quantity.parse(raw)
    raise TypeError(f"sparsam.api.parse does not know the type {hint!r}")
