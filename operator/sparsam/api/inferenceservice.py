"""InferenceService: a model served over HTTP that autoscales on traffic, down to zero.

Typed model of `crds/sparsam.dev_inferenceservices.yaml`; the CRD's descriptions explain every
field. Defaults here equal the CRD's `default:` values (the apiserver applies those first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, Literal

from sparsam.api.common import Cost, ObjectMeta, SpotPolicy, SpotStatus
from sparsam.api.conditions import Condition
from sparsam.api.parse import MAX_CPU, MAX_MEMORY, Quantity, at_most, from_raw, refuse_dot_segments

ModelFormat = Literal["pytorch", "torchscript", "onnx", "huggingface"]
ScalingMetric = Literal["rps", "concurrency"]
Phase = Literal["Active", "ScaledToZero", "Waking", "Degraded"]

DEFAULT_CPU: Final = Quantity.parse("1")
DEFAULT_MEMORY: Final = Quantity.parse("2Gi")


@dataclass(frozen=True, slots=True)
class Model:
    uri: str
    format: ModelFormat = "pytorch"


@dataclass(frozen=True, slots=True)
class Resources:
    gpus: int = field(default=1, metadata=at_most(16))
    gpu_type: str | None = None
    cpu: Quantity = field(default=DEFAULT_CPU, metadata=at_most(MAX_CPU))
    memory: Quantity = field(default=DEFAULT_MEMORY, metadata=at_most(MAX_MEMORY))


@dataclass(frozen=True, slots=True)
class Replicas:
    min: int = field(default=0, metadata=at_most(1000))
    max: int = field(default=1, metadata=at_most(1000))


@dataclass(frozen=True, slots=True)
class Scaling:
    metric: ScalingMetric = "rps"
    target: float = field(default=10.0, metadata=at_most(1_000_000, at_least=0.001))
    scale_to_zero_after: timedelta = timedelta(minutes=5)
    scale_down_delay: timedelta = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Capacity:
    #: None: the governing CostPolicy's spot.default, else Prefer (`status.spot` says which).
    spot: SpotPolicy | None = None
    on_demand_base: int = field(default=0, metadata=at_most(1000))


@dataclass(frozen=True, slots=True)
class SLO:
    p99_latency_ms: float = field(metadata=at_most(3_600_000))


@dataclass(frozen=True, slots=True)
class InferenceServiceSpec:
    model: Model
    image: str | None = None
    resources: Resources = field(default_factory=Resources)
    replicas: Replicas = field(default_factory=Replicas)
    scaling: Scaling = field(default_factory=Scaling)
    capacity: Capacity = field(default_factory=Capacity)
    slo: SLO | None = None


@dataclass(frozen=True, slots=True)
class ScaleToZeroAfterStatus:
    """status.scaleToZeroAfter: the idle time before scale to zero in force (the shorter of
    spec.scaling.scaleToZeroAfter and the governing CostPolicy's scaleToZero.after)."""

    seconds: float
    source: Literal["Spec", "CostPolicy"]
    message: str | None = None


@dataclass(frozen=True, slots=True)
class InferenceServiceStatus:
    observed_generation: int | None = None
    phase: Phase | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    url: str | None = None
    last_request_time: str | None = None
    last_cold_start_seconds: float | None = None
    spot: SpotStatus | None = None
    scale_to_zero_after: ScaleToZeroAfterStatus | None = None
    cost: Cost | None = None
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class InferenceService:
    """An InferenceService as the operator reads it."""

    metadata: ObjectMeta
    spec: InferenceServiceSpec
    status: InferenceServiceStatus

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> InferenceService:
        """Read a raw body (as Kopf or the API client hands it over); InvalidSpec names the
        field that does not fit."""
        spec = from_raw(InferenceServiceSpec, body.get("spec"), "spec")
        refuse_dot_segments("spec.model.uri", spec.model.uri)
        return cls(
            ObjectMeta.from_body(body),
            spec,
            from_raw(InferenceServiceStatus, body.get("status"), "status"),
        )
