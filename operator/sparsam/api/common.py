"""Shapes every kind shares: object metadata, the spot policy, cost in status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: Prefer: spot first, on-demand when spot has none; Require: spot only; Never: on-demand only.
SpotPolicy = Literal["Prefer", "Require", "Never"]
#: Where a setting in force comes from: the object's own spec, the CostPolicy governing its
#: namespace, or the operator's default (no CostPolicy governs the namespace).
SettingSource = Literal["Spec", "CostPolicy", "Default"]


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """The parts of metadata the operator reads. `namespace` is "" for cluster-scoped kinds."""

    name: str
    namespace: str
    uid: str
    generation: int
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ObjectMeta:
        metadata: Mapping[str, Any] = body.get("metadata") or {}
        return cls(
            name=str(metadata.get("name", "")),
            namespace=str(metadata.get("namespace", "")),
            uid=str(metadata.get("uid", "")),
            generation=int(metadata.get("generation", 0)),
            labels=dict(metadata.get("labels") or {}),
            annotations=dict(metadata.get("annotations") or {}),
        )


@dataclass(frozen=True, slots=True)
class Cost:
    """Cost so far, in the currency of the pools' pricePerHour; None where not yet known."""

    accrued: float | None = None
    on_demand_equivalent: float | None = None
    savings_ratio: float | None = None
    gpu_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class SpotStatus:
    """status.spot: the spot policy in force (spec.capacity.spot, else the governing
    CostPolicy's spot.default, else Prefer) and where it comes from."""

    policy: SpotPolicy
    source: SettingSource
    message: str | None = None
