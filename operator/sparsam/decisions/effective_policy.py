"""What the CostPolicy governing a namespace asks of its workloads, as one value.

    effective = resolve_policy(policy)        # policy: decisions.policy.effective_policy(...)
    spot = choose_spot(job.spec.capacity.spot, effective)
    keep = choose_scale_to_zero_after(svc.spec.scaling.scale_to_zero_after, effective)

Which policy governs a namespace is `decisions.policy` (highest priority, then first name; never
a merge). This module reads that one policy, once per pass of an object, into an
`EffectivePolicy`: every rule the decisions obey, with the operator's defaults where the policy
leaves a rule out or no policy governs the namespace. The controllers pass this value down
instead of the CostPolicy, so the spec of a CostPolicy is read here and nowhere else (the
CostPolicy controller's own pass aside).

Two rules combine with the workload's own spec, and say where the result comes from (the
objects' `status.spot` and `status.scaleToZeroAfter`):

- **Spot.** A workload's `spec.capacity.spot` wins when set; unset, the policy's
  `spot.default` applies; with no policy, Prefer.
- **Scale to zero.** A policy's `scaleToZero.after` is an upper bound: an InferenceService's
  idle time before scale to zero is the shorter of its own `scaleToZeroAfter` and the policy's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal

from sparsam.api.common import SettingSource, SpotPolicy
from sparsam.api.conditions import find
from sparsam.api.costpolicy import CostPolicy, OnExceeded
from sparsam.api.trainingjob import TrainingJob
from sparsam.decisions.cost import BUDGET_EXCEEDED
from sparsam.decisions.policy import effective_policy
from sparsam.decisions.training import BudgetStop

__all__ = [
    "NO_POLICY",
    "EffectivePolicy",
    "KeepAlive",
    "SpotChoice",
    "choose_scale_to_zero_after",
    "choose_spot",
    "compression_stop",
    "governing_policy",
    "policy_stop",
    "resolve_policy",
]

#: A workload's spot policy when neither its spec nor a CostPolicy sets one.
DEFAULT_SPOT: Final[SpotPolicy] = "Prefer"


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """The rules of one namespace, resolved from its governing CostPolicy (or the operator's
    defaults, the value `EffectivePolicy()`, when none governs it)."""

    #: The governing CostPolicy's name; None when no policy governs the namespace.
    name: str | None = None
    #: spot.default: the spot policy of a workload that sets none.
    spot_default: SpotPolicy = DEFAULT_SPOT
    #: spot.onDemandFallbackAfter (the capacity planner's).
    on_demand_fallback_after: timedelta = timedelta(minutes=5)
    #: allowedGPUTypes; None allows every type.
    allowed_gpu_types: tuple[str, ...] | None = None
    #: scaleToZero.after: the longest idle time before an InferenceService scales to zero.
    scale_to_zero_after: timedelta | None = None
    #: compression.required: a TrainingJob without spec.compression does not start.
    compression_required: bool = False
    #: compression.maxAccuracyDrop: caps a TrainingJob's own.
    max_accuracy_drop: float | None = None
    #: checkpoint.maxLostWorkFraction: bounds the auto checkpoint cadence.
    max_lost_work_fraction: float | None = None
    #: budget.onExceeded, when the policy has a budget.
    budget_action: OnExceeded | None = None
    #: What the spent monthly budget does to work now (BlockNew or Suspend); None: nothing.
    budget_stop: BudgetStop | None = None

    @property
    def governed(self) -> bool:
        return self.name is not None


#: The rules of a namespace no CostPolicy governs.
NO_POLICY: Final = EffectivePolicy()


def policy_stop(policy: CostPolicy | None) -> BudgetStop | None:
    """What a policy's spent monthly budget does to its namespaces' work (the CostPolicy
    controller sets its BudgetExceeded condition): BlockNew and Suspend stop it; Alert does
    not."""
    if policy is None or policy.spec.budget is None:
        return None
    exceeded = find(policy.status.conditions, BUDGET_EXCEEDED)
    action = policy.spec.budget.on_exceeded
    if exceeded is None or exceeded.status != "True" or action == "Alert":
        return None
    return BudgetStop(action, f"CostPolicy {policy.metadata.name}: {exceeded.message}")


def resolve_policy(policy: CostPolicy | None) -> EffectivePolicy:
    """The rules `policy` (the one governing a namespace, or None) sets, with the operator's
    defaults for what it leaves out."""
    if policy is None:
        return NO_POLICY
    spec = policy.spec
    compression, checkpoint = spec.compression, spec.checkpoint
    return EffectivePolicy(
        name=policy.metadata.name,
        spot_default=spec.spot.default,
        on_demand_fallback_after=spec.spot.on_demand_fallback_after,
        allowed_gpu_types=spec.allowed_gpu_types,
        scale_to_zero_after=spec.scale_to_zero.after if spec.scale_to_zero else None,
        compression_required=compression is not None and compression.required,
        max_accuracy_drop=compression.max_accuracy_drop if compression else None,
        max_lost_work_fraction=checkpoint.max_lost_work_fraction if checkpoint else None,
        budget_action=spec.budget.on_exceeded if spec.budget else None,
        budget_stop=policy_stop(policy),
    )


def governing_policy(
    policies: Iterable[CostPolicy], namespace_labels: Mapping[str, str]
) -> EffectivePolicy:
    """The rules of a namespace with `namespace_labels`: `resolve_policy` of the policy that
    governs it (`decisions.policy.effective_policy`)."""
    return resolve_policy(effective_policy(policies, namespace_labels))


def compression_stop(job: TrainingJob, policy: EffectivePolicy) -> BudgetStop | None:
    """A policy with compression.required keeps a job without spec.compression from starting
    (one that runs already goes on)."""
    if not policy.compression_required or job.spec.compression is not None:
        return None
    message = (
        f"CostPolicy {policy.name} requires spec.compression (compression.required): "
        "the job does not start without it"
    )
    return BudgetStop("BlockNew", message, reason="CompressionRequired")


@dataclass(frozen=True, slots=True)
class SpotChoice:
    """The spot policy in force for a workload, and where it comes from."""

    policy: SpotPolicy
    source: SettingSource
    message: str

    def to_raw(self) -> dict[str, str]:
        """status.spot."""
        return {"policy": self.policy, "source": self.source, "message": self.message}


def choose_spot(asked: SpotPolicy | None, policy: EffectivePolicy) -> SpotChoice:
    """The spot policy of a workload whose spec.capacity.spot is `asked` (None: unset): its
    own, else the governing policy's spot.default, else Prefer."""
    if asked is not None:
        return SpotChoice(asked, "Spec", f"spot: {asked} (from spec.capacity.spot)")
    if policy.name is not None:
        chosen = policy.spot_default
        return SpotChoice(
            chosen, "CostPolicy", f"spot: {chosen} (from CostPolicy {policy.name} spot.default)"
        )
    return SpotChoice(
        DEFAULT_SPOT,
        "Default",
        f"spot: {DEFAULT_SPOT} (the operator's default: no CostPolicy governs the namespace)",
    )


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """The idle time before an InferenceService scales to zero, and where it comes from."""

    after: timedelta
    source: Literal["Spec", "CostPolicy"]
    message: str

    def to_raw(self) -> dict[str, float | str]:
        """status.scaleToZeroAfter."""
        return {
            "seconds": self.after.total_seconds(),
            "source": self.source,
            "message": self.message,
        }


def choose_scale_to_zero_after(asked: timedelta, policy: EffectivePolicy) -> KeepAlive:
    """min(the service's spec.scaling.scaleToZeroAfter `asked`, the policy's
    scaleToZero.after): the policy's is an upper bound, never a floor."""
    bound = policy.scale_to_zero_after
    if bound is not None and bound < asked:
        return KeepAlive(
            bound,
            "CostPolicy",
            f"scaleToZeroAfter: {_seconds(bound)} (CostPolicy {policy.name} scaleToZero.after"
            f" caps spec.scaling.scaleToZeroAfter {_seconds(asked)})",
        )
    return KeepAlive(
        asked, "Spec", f"scaleToZeroAfter: {_seconds(asked)} (from spec.scaling.scaleToZeroAfter)"
    )


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():g}s"
