"""The TrainingJob model: crds/sparsam.dev_trainingjobs.yaml as frozen dataclasses.

Each dataclass mirrors one object of the CRD schema, field by field: the snake_case of the JSON
name, the matching type, no default where the CRD requires the field, the CRD's `default:` where
it has one, and `None` for the other optional fields. `sparsam.api.parse.from_raw` reads raw
bodies into them; the field descriptions live in the CRD (`kubectl explain trainingjob.spec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, Literal

from sparsam.api.common import Cost, ObjectMeta, SpotPolicy, SpotStatus
from sparsam.api.conditions import Condition, find
from sparsam.api.parse import (
    MAX_CPU,
    MAX_MEMORY,
    InvalidSpec,
    Quantity,
    at_most,
    from_raw,
    parse_duration,
    refuse_dot_segments,
)

QuantizationMode = Literal["dynamic", "static", "none"]
BudgetAction = Literal["Alert", "Suspend", "Fail"]
Phase = Literal[
    "Pending",
    "Running",
    "Checkpointing",
    "Compressing",
    "Deploying",
    "Succeeded",
    "Failed",
    "Suspended",
]
#: Phases a job does not leave.
FINISHED_PHASES: frozenset[Phase] = frozenset({"Succeeded", "Failed"})
IntervalMode = Literal["Auto", "Fixed"]

#: The value of spec.checkpoint.interval that lets the operator choose the interval.
INTERVAL_AUTO: Final = "auto"
#: The most seconds spec.runPolicy's deadline and TTL take: 365 days.
MAX_SECONDS: Final = 31_536_000
#: The CRD's defaults for spec.resources.cpu and .memory.
DEFAULT_WORKER_CPU: Final = Quantity.parse("2")
DEFAULT_WORKER_MEMORY: Final = Quantity.parse("8Gi")


# --- spec ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeySelector:
    """A key of a Secret or ConfigMap in the job's namespace."""

    name: str
    key: str
    optional: bool | None = None

    def to_raw(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"name": self.name, "key": self.key}
        if self.optional is not None:
            raw["optional"] = self.optional
        return raw


@dataclass(frozen=True, slots=True)
class FieldRef:
    field_path: str

    def to_raw(self) -> dict[str, Any]:
        return {"fieldPath": self.field_path}


@dataclass(frozen=True, slots=True)
class EnvVarSource:
    """Exactly one of the three is set (the CRD enforces it)."""

    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None
    field_ref: FieldRef | None = None

    def to_raw(self) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        if self.secret_key_ref is not None:
            raw["secretKeyRef"] = self.secret_key_ref.to_raw()
        if self.config_map_key_ref is not None:
            raw["configMapKeyRef"] = self.config_map_key_ref.to_raw()
        if self.field_ref is not None:
            raw["fieldRef"] = self.field_ref.to_raw()
        return raw


@dataclass(frozen=True, slots=True)
class EnvVar:
    """A container environment variable; `value` and `value_from` are mutually exclusive."""

    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None

    def to_raw(self) -> dict[str, Any]:
        """The core/v1 EnvVar dict, for a pod's container."""
        raw: dict[str, Any] = {"name": self.name}
        if self.value is not None:
            raw["value"] = self.value
        if self.value_from is not None:
            raw["valueFrom"] = self.value_from.to_raw()
        return raw


@dataclass(frozen=True, slots=True)
class Workers:
    """The elastic worker range; `replicas` is what the /scale subresource writes."""

    min: int = field(default=1, metadata=at_most(1000))
    max: int = field(default=1, metadata=at_most(1000))
    replicas: int | None = field(default=None, metadata=at_most(1000))


@dataclass(frozen=True, slots=True)
class Resources:
    """What each worker requests. Immutable after creation."""

    gpus: int = field(default=1, metadata=at_most(16))
    gpu_type: str | None = None
    cpu: Quantity = field(default=DEFAULT_WORKER_CPU, metadata=at_most(MAX_CPU))
    memory: Quantity = field(default=DEFAULT_WORKER_MEMORY, metadata=at_most(MAX_MEMORY))


@dataclass(frozen=True, slots=True)
class Capacity:
    #: None: the governing CostPolicy's spot.default, else Prefer (`status.spot` says which).
    spot: SpotPolicy | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where checkpoints go (`volume_claim`, `path`: immutable) and how often (`interval`)."""

    volume_claim: str
    path: str = "/checkpoints"
    #: "auto" or a Go duration; read it through `interval_auto` / `interval_duration`.
    interval: str = INTERVAL_AUTO

    @property
    def interval_auto(self) -> bool:
        return self.interval == INTERVAL_AUTO

    @property
    def interval_duration(self) -> timedelta | None:
        """The fixed interval, or None when the operator chooses it (`auto`)."""
        return None if self.interval_auto else parse_duration(self.interval)


@dataclass(frozen=True, slots=True)
class Pruning:
    sparsity: float = field(default=0.5, metadata=at_most(1))
    structured: bool = False


@dataclass(frozen=True, slots=True)
class Quantization:
    mode: QuantizationMode = "dynamic"


@dataclass(frozen=True, slots=True)
class Distillation:
    student: str
    temperature: float = field(default=2.0, metadata=at_most(100, at_least=0.01))
    alpha: float = field(default=0.5, metadata=at_most(1))
    epochs: int = field(default=1, metadata=at_most(10_000))


@dataclass(frozen=True, slots=True)
class Compression:
    """At least one of pruning, quantization, distillation is set (the CRD enforces it)."""

    pruning: Pruning | None = None
    quantization: Quantization | None = None
    distillation: Distillation | None = None
    max_accuracy_drop: float = field(default=0.01, metadata=at_most(1))

    def to_raw(self) -> dict[str, Any]:
        """spec.compression as the CRD spells it (what the compress pod is given)."""
        raw: dict[str, Any] = {"maxAccuracyDrop": self.max_accuracy_drop}
        if self.pruning is not None:
            raw["pruning"] = {
                "sparsity": self.pruning.sparsity,
                "structured": self.pruning.structured,
            }
        if self.quantization is not None:
            raw["quantization"] = {"mode": self.quantization.mode}
        if self.distillation is not None:
            d = self.distillation
            raw["distillation"] = {
                "student": d.student,
                "temperature": d.temperature,
                "alpha": d.alpha,
                "epochs": d.epochs,
            }
        return raw


@dataclass(frozen=True, slots=True)
class Deploy:
    inference_service: str
    min_replicas: int = field(default=0, metadata=at_most(1000))
    max_replicas: int = field(default=3, metadata=at_most(1000))


@dataclass(frozen=True, slots=True)
class Budget:
    max_cost: float = field(metadata=at_most(1_000_000_000))
    on_exceeded: BudgetAction = "Suspend"


@dataclass(frozen=True, slots=True)
class RunPolicy:
    active_deadline_seconds: int | None = field(default=None, metadata=at_most(MAX_SECONDS))
    backoff_limit: int = field(default=3, metadata=at_most(1000))
    ttl_seconds_after_finished: int | None = field(default=None, metadata=at_most(MAX_SECONDS))
    suspend: bool = False

    @property
    def active_deadline(self) -> timedelta | None:
        if self.active_deadline_seconds is None:
            return None
        return timedelta(seconds=self.active_deadline_seconds)

    @property
    def ttl_after_finished(self) -> timedelta | None:
        if self.ttl_seconds_after_finished is None:
            return None
        return timedelta(seconds=self.ttl_seconds_after_finished)


@dataclass(frozen=True, slots=True)
class TrainingJobSpec:
    image: str
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    env: tuple[EnvVar, ...] | None = None
    workers: Workers = field(default_factory=Workers)
    resources: Resources = field(default_factory=Resources)
    capacity: Capacity = field(default_factory=Capacity)
    checkpoint: Checkpoint | None = None
    compression: Compression | None = None
    deploy: Deploy | None = None
    budget: Budget | None = None
    run_policy: RunPolicy = field(default_factory=RunPolicy)


# --- status -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkersStatus:
    desired: int | None = None
    running: int | None = None


@dataclass(frozen=True, slots=True)
class PodRef:
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class LastCheckpoint:
    step: int
    #: RFC 3339.
    time: str
    path: str | None = None


@dataclass(frozen=True, slots=True)
class CheckpointIntervalStatus:
    seconds: int
    mode: IntervalMode
    write_seconds: float | None = None
    mean_time_between_preemptions_seconds: float | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class IntBeforeAfter:
    before: int | None = None
    after: int | None = None


@dataclass(frozen=True, slots=True)
class FloatBeforeAfter:
    before: float | None = None
    after: float | None = None


@dataclass(frozen=True, slots=True)
class CompressionStatus:
    size_bytes: IntBeforeAfter | None = None
    accuracy: FloatBeforeAfter | None = None
    latency_ms: FloatBeforeAfter | None = None
    accepted: bool | None = None


@dataclass(frozen=True, slots=True)
class ModelStatus:
    uri: str


@dataclass(frozen=True, slots=True)
class TrainingJobStatus:
    observed_generation: int | None = None
    phase: Phase | None = None
    conditions: tuple[Condition, ...] = ()
    selector: str | None = None
    workers: WorkersStatus | None = None
    preemptions: int = 0
    restarts: int = 0
    #: Ended workers already in preemptions/restarts, until their pods are gone.
    counted_pods: tuple[str, ...] = ()
    #: The worker pods the last pass left running: one gone by the next pass was lost.
    worker_pods: tuple[PodRef, ...] = ()
    last_checkpoint: LastCheckpoint | None = None
    checkpoint_interval: CheckpointIntervalStatus | None = None
    spot: SpotStatus | None = None
    cost: Cost | None = None
    compression: CompressionStatus | None = None
    model: ModelStatus | None = None
    #: RFC 3339.
    start_time: str | None = None
    #: RFC 3339.
    completion_time: str | None = None

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type, or None when there is none."""
        return find(self.conditions, type_)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES


# --- the object ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """A TrainingJob as the operator reads it."""

    metadata: ObjectMeta
    spec: TrainingJobSpec
    status: TrainingJobStatus

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TrainingJob:
        """Read a raw body (as Kopf or the API client hands it over); InvalidSpec names the
        field that does not fit."""
        spec = from_raw(TrainingJobSpec, body.get("spec"), "spec")
        _check_spec(spec)
        return cls(
            ObjectMeta.from_body(body),
            spec,
            from_raw(TrainingJobStatus, body.get("status"), "status"),
        )


def _check_spec(spec: TrainingJobSpec) -> None:
    """The CRD's rules that the field types alone do not carry; InvalidSpec names the field."""
    # (compression or deploy without a checkpoint is the CRD's to refuse; an object from before
    # that rule fails its delivery with reason CheckpointRequired instead.)
    checkpoint = spec.checkpoint
    if checkpoint is not None:
        refuse_dot_segments("spec.checkpoint.path", checkpoint.path)
        try:
            checkpoint.interval_duration  # noqa: B018 - parsed now, so that later reads cannot fail
        except ValueError as exc:
            raise InvalidSpec("spec.checkpoint.interval", str(exc)) from None
    if spec.compression is not None and spec.compression.distillation is not None:
        student = spec.compression.distillation.student
        refuse_dot_segments("spec.compression.distillation.student", student)
