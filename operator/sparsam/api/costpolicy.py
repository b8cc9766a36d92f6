"""CostPolicy: budgets and cost rules for the namespaces it selects (cluster-scoped, in Git).

Typed model of `crds/sparsam.dev_costpolicies.yaml`; the CRD's descriptions explain every
field. Defaults here equal the CRD's `default:` values (the apiserver applies those first).
Which policy applies to a namespace (highest priority, then first name) is decided in
sparsam.decisions, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from sparsam.api.common import ObjectMeta, SpotPolicy
from sparsam.api.conditions import Condition
from sparsam.api.parse import at_most, from_raw, json_name

SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
OnExceeded = Literal["Alert", "BlockNew", "Suspend"]


@dataclass(frozen=True, slots=True)
class LabelSelectorRequirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """metav1.LabelSelector. An empty selector selects every namespace."""

    match_labels: Mapping[str, str] | None = None
    match_expressions: tuple[LabelSelectorRequirement, ...] | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    monthly: float = field(metadata=at_most(1_000_000_000))
    alert_at: tuple[float, ...] = (0.8, 1.0)
    on_exceeded: OnExceeded = "Alert"


@dataclass(frozen=True, slots=True)
class Spot:
    default: SpotPolicy = "Prefer"
    on_demand_fallback_after: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ScaleToZero:
    after: timedelta


@dataclass(frozen=True, slots=True)
class Compression:
    required: bool = False
    max_accuracy_drop: float | None = field(default=None, metadata=at_most(1))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    max_lost_work_fraction: float = field(metadata=at_most(1))


@dataclass(frozen=True, slots=True)
class CostPolicySpec:
    namespace_selector: LabelSelector
    priority: int = field(default=0, metadata=at_most(1000))
    budget: Budget | None = None
    spot: Spot = field(default_factory=Spot)
    scale_to_zero: ScaleToZero | None = None
    compression: Compression | None = None
    checkpoint: Checkpoint | None = None
    #: None allows every GPU type.
    allowed_gpu_types: tuple[str, ...] | None = json_name("allowedGPUTypes", default=None)


@dataclass(frozen=True, slots=True)
class Period:
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True, slots=True)
class CostPolicyStatus:
    observed_generation: int | None = None
    spent: float | None = None
    period: Period | None = None
    matched_namespaces: tuple[str, ...] | None = None
    blocked_namespaces: tuple[str, ...] | None = None
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class CostPolicy:
    """A CostPolicy (cluster-scoped: metadata.namespace is empty)."""

    metadata: ObjectMeta
    spec: CostPolicySpec
    status: CostPolicyStatus

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CostPolicy:
        """Read a raw body (as Kopf or the API client hands it over); InvalidSpec names the
        field that does not fit."""
        return cls(
            ObjectMeta.from_body(body),
            from_raw(CostPolicySpec, body.get("spec"), "spec"),
            from_raw(CostPolicyStatus, body.get("status"), "status"),
        )
