"""The InferenceService autoscaler: how many replicas to run, and the phase that implies.

    decision = decide_scaling(ScalingInput(spec, replicas, ready, sample, ...), now)
    # act on decision.replicas, write decision.phase / ready condition, keep decision.memory
    on_demand, spot = spot_split(decision.replicas, spec.capacity.on_demand_base,
                                 choose_spot(spec.capacity.spot, policy).policy)

Pure: frozen inputs and `now` in, a frozen decision out. The controller feeds it what
Prometheus said and carries `decision.memory` to the next call; the simulator calls the same
function with a simulated clock.

How it decides, in order:

1. **Load.** `sample.value` is the configured metric (`rps`: requests per second, or
   `concurrency`: requests in flight) summed over the service. None, NaN, infinite or negative
   means *missing* (no series, an empty result, Prometheus unreachable): see rule 6.
2. **Recommendation.** `ceil(load / target)` replicas, at least 1 while load is above zero,
   clamped to `spec.replicas` [min, max].
3. **Scale up at once**: a recommendation above the current replica count is applied now.
4. **Scale down slowly** (the HorizontalPodAutoscaler's scale-down stabilization): the count
   only falls to the *highest* recommendation made within the last `scaleDownDelay`, so
   flapping traffic does not flap replicas; the window is kept in `ScalerMemory`. A scaler
   without memory (its first call, an operator restart) takes the running count as a
   recommendation made now, so it never scales down before `scaleDownDelay` has passed.
5. **Scale to zero** only when `min` is 0, the metric is present and exactly zero, and no
   request was seen for `scaleToZeroAfter`: counted from the latest of `lastRequestTime` (from
   the activator or the model server), the last time the scaler saw the metric above zero or a
   wake request, and the start of its current unbroken watch (its first call, or the return of
   metrics after a gap), so nothing unseen is taken for idleness. Until then an idle, running
   service is recommended 1 replica (so it still shrinks to 1 after `scaleDownDelay`). Reaching
   zero is not held back by the scale-down window: `scaleToZeroAfter` is its own, longer, idle
   window. A service already at zero stays there unless there is load, a wake request, or a
   request or traffic seen within `scaleToZeroAfter` (a fresh service with min 0 starts at zero;
   an operator restart does not wake idle services).
6. **Missing data is not zero.** With the metric missing the scaler never scales down and never
   scales to zero: it keeps the current count (raised to `min`, and to 1 on a wake request;
   only a lowered `max` lowers it). The Ready condition's reason is `MetricsUnavailable` with the
   sample's reason in the message. The held count enters the window, so once data returns the
   count still waits `scaleDownDelay` before falling, and the watch of rule 5 restarts (a gap
   proves no idleness).
7. **Wake.** A wake request (the activator holds a request while at zero) makes the count at
   least 1 whatever the metric says, and counts as traffic for rule 5.
8. **Exact last request** (`ScalingSettings.exact_last_request`, set when the request rate and
   `lastRequestTime` come from the same counter: the activator's). `rps` is a trailing rate
   (1m by default), so it stays above zero for a whole window after the last request. With an
   exact `lastRequestTime`, a rate above zero whose last request is `scaleToZeroAfter` old or
   older is that window's residue, not traffic: it recommends nothing, and only
   `lastRequestTime` (not the residue) marks traffic for rule 5. So scale-to-zero comes
   `scaleToZeroAfter` after the last request, not a rate window later. `concurrency` (requests
   in flight now) is never a residue.
9. **Never cut a request in flight.** `in_flight` is the requests received and not yet
   answered (the activator's in-flight gauge; held ones included); with the `concurrency`
   metric the sample is that count and stands in for it when `in_flight` is unknown. While it
   is above zero the recommendation is at least 1 and the pass counts as traffic for rule 5, so
   a service goes to zero only after no request was in flight (nor arrived) for
   `scaleToZeroAfter`, never `scaleToZeroAfter` after the last *arrival* with a long answer
   still streaming. Unknown (None, NaN, negative): rules 5 and 8 alone, as before.
10. **Wake sizing.** While no replica is ready and `held_requests` (the activator's hold
   queues) is known and above zero, the recommendation is at most
   `max(1, ceil(held_requests / target))`: the held requests are released together to the
   first ready replica, so a wake never starts a replica per held request, whatever the metric
   counts them as. It never lowers the count below what is running at once (rule 4 applies).

Phase and Ready condition (`decision.phase`, `ready_status`, `reason`):

- `ScaledToZero` (Ready True, reason `ScaledToZero`): the decision is 0 replicas.
- `Waking` (Ready False, reason `Waking`): replicas are wanted but none is ready yet, for at most
  `ScalingSettings.ready_grace` (default 5 minutes, a GPU model's cold start) since that began:
  a wake from zero, a first rollout, or every replica lost.
- `Degraded` (Ready False, reason `ReplicasNotReady`): replicas are wanted and none has been
  ready for longer than `ready_grace`.
- `Active` (Ready True, reason `Serving`): at least one replica is ready. Fewer ready than wanted
  is normal while scaling up and stays Active.
- Missing metrics do not make a service Degraded (it may be serving fine): the phase follows the
  rules above, but the reason becomes `MetricsUnavailable` (a Degraded reason still wins), and
  `metrics_available` is False.

Invariants (tested as properties): the decision is within [0, max] and never below `min`;
it is 0 only when min is 0 and the metric is present, or when the service was at 0 and the
metric is missing and no wake was requested (no data, so no change); with metrics missing and
replicas running it is never 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from sparsam.api.common import SpotPolicy
from sparsam.api.conditions import Status
from sparsam.api.inferenceservice import InferenceServiceSpec, Phase

__all__ = [
    "REASON_METRICS_UNAVAILABLE",
    "REASON_REPLICAS_NOT_READY",
    "REASON_SCALED_TO_ZERO",
    "REASON_SERVING",
    "REASON_WAKING",
    "MetricSample",
    "Recommendation",
    "ScalerMemory",
    "ScalingDecision",
    "ScalingInput",
    "ScalingSettings",
    "decide_scaling",
    "load_of",
    "spot_split",
]

REASON_SERVING: Final = "Serving"
REASON_SCALED_TO_ZERO: Final = "ScaledToZero"
REASON_WAKING: Final = "Waking"
REASON_REPLICAS_NOT_READY: Final = "ReplicasNotReady"
REASON_METRICS_UNAVAILABLE: Final = "MetricsUnavailable"

#: Load a hair above a multiple of the target (float noise) does not add a replica.
_EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class MetricSample:
    """The configured metric summed over the service; `value` None when there is none, with
    `reason` saying why (e.g. "Prometheus unreachable: connection refused", "empty result")."""

    value: float | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: datetime
    replicas: int


@dataclass(frozen=True, slots=True)
class ScalerMemory:
    """What the scaler carries from one call to the next (start with `ScalerMemory()`).

    `recommendations` holds the scale-down window as a sliding maximum: oldest first, replica
    counts strictly falling, entries older than `scaleDownDelay` dropped, so it stays short
    (at most max - min + 1 entries) and its first entry is the window's highest recommendation.
    """

    recommendations: tuple[Recommendation, ...] = ()
    #: When the replica count last changed by this scaler's decision.
    last_scale_time: datetime | None = None
    #: The last time the metric was seen above zero, or a wake was requested.
    last_traffic_time: datetime | None = None
    #: Start of the current unbroken watch with metrics present (rule 5); None after a gap.
    watching_since: datetime | None = None
    #: Since when replicas are wanted and none is ready; None while some are ready or none wanted.
    unready_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class ScalingSettings:
    """Operator-wide knobs (not per service)."""

    #: How long replicas may be wanted with none ready before the phase turns Degraded.
    ready_grace: timedelta = timedelta(minutes=5)
    #: `last_request_time` covers every request the `rps` metric counts (rule 8).
    exact_last_request: bool = False


@dataclass(frozen=True, slots=True)
class ScalingInput:
    spec: InferenceServiceSpec
    #: Replicas of the Deployment now (spec.replicas as last set), and how many are ready.
    replicas: int
    ready_replicas: int
    sample: MetricSample
    #: status.lastRequestTime; None when unknown.
    last_request_time: datetime | None = None
    #: The activator asked for a wake (a request arrived while at zero) since the last call.
    wake_requested: bool = False
    #: Requests received and not yet answered, held ones included (rule 9); None: unknown.
    in_flight: float | None = None
    #: Requests held for a ready replica now (rule 10); None: unknown.
    held_requests: int | None = None
    memory: ScalerMemory = field(default_factory=ScalerMemory)
    settings: ScalingSettings = field(default_factory=ScalingSettings)


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    replicas: int
    phase: Phase
    #: The Ready condition: status, CamelCase reason, sentence for users.
    ready_status: Status
    reason: str
    message: str
    metrics_available: bool
    #: Carry to the next call.
    memory: ScalerMemory


def load_of(sample: MetricSample) -> float | None:
    """The sample's value, or None when it is missing, NaN, infinite or negative."""
    value = sample.value
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _in_flight(inp: ScalingInput) -> float:
    """Requests in flight (rule 9): the input's count, else the concurrency sample; 0 when
    neither is known."""
    value = inp.in_flight
    if value is None and inp.spec.scaling.metric == "concurrency":
        value = inp.sample.value
    if value is None or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _window(
    history: tuple[Recommendation, ...], new: Recommendation, delay: timedelta
) -> tuple[Recommendation, ...]:
    """The sliding maximum after adding `new`: drop what fell out of the window, and older
    entries that `new` dominates (not higher, and older)."""
    kept = [r for r in history if new.at - r.at < delay and r.replicas > new.replicas]
    return (*kept, new)


def decide_scaling(inp: ScalingInput, now: datetime) -> ScalingDecision:
    """Desired replicas, phase and Ready condition for one InferenceService at `now` (see the
    module docstring for the rules)."""
    spec = inp.spec
    low, high = spec.replicas.min, spec.replicas.max
    current = max(0, inp.replicas)
    memory = inp.memory
    load = load_of(inp.sample)
    last_traffic = memory.last_traffic_time

    watching_since = memory.watching_since
    if load is None:
        # Rule 6: hold. The watch of rule 5 restarts when data returns: a gap proves nothing.
        recommendation = max(current, low)
        if inp.wake_requested:
            recommendation = max(recommendation, 1)
            last_traffic = now
        recommendation = _clamp(recommendation, low, high)
        watching_since = None
        to_zero = False
    else:
        if watching_since is None:
            watching_since = now
        last_request = inp.last_request_time
        exact = (
            inp.settings.exact_last_request
            and spec.scaling.metric == "rps"
            and last_request is not None
        )
        if exact and now - (last_request or now) >= spec.scaling.scale_to_zero_after:
            load = 0.0  # rule 8: the trailing rate's residue
        raw = math.ceil(load / spec.scaling.target - _EPSILON)
        busy = _in_flight(inp) > 0  # rule 9
        if load > 0 or inp.wake_requested or busy:
            raw = max(raw, 1)
        if (load > 0 and not exact) or inp.wake_requested or busy:
            last_traffic = now
        held = inp.held_requests
        if held is not None and held > 0 and inp.ready_replicas <= 0:
            # Rule 10: the wake is sized by the held requests, never one replica per request.
            raw = min(raw, max(1, math.ceil(held / spec.scaling.target - _EPSILON)))
        recommendation = _clamp(raw, low, high)
        evidence = [t for t in (inp.last_request_time, last_traffic) if t is not None]
        idle_since = max([*evidence, watching_since])
        to_zero = recommendation == 0 and now - idle_since >= spec.scaling.scale_to_zero_after
        if recommendation == 0 and not to_zero:
            # Idle, but not yet for scaleToZeroAfter: keep one replica running, or bring one
            # back when there was a request lately; at zero without one, stay at zero.
            recent = any(now - t < spec.scaling.scale_to_zero_after for t in evidence)
            if current > 0 or recent:
                recommendation = 1

    delay = spec.scaling.scale_down_delay
    seen = memory.recommendations
    if not seen and current > 0:
        # No memory (first call, operator restart): the running count counts as recommended
        # now, so losing the window never scales down early.
        seen = (Recommendation(now, _clamp(current, low, high)),)
    history = _window(seen, Recommendation(now, recommendation), delay)
    if to_zero:
        desired = 0
    elif recommendation >= current:
        desired = recommendation
    else:
        desired = min(current, history[0].replicas)
    desired = _clamp(desired, low, high)

    unready_since: datetime | None = None
    if desired > 0 and inp.ready_replicas <= 0:
        unready_since = memory.unready_since or now

    phase: Phase
    ready: Status
    if desired == 0:
        phase, ready, reason = "ScaledToZero", "True", REASON_SCALED_TO_ZERO
        message = "No replicas: idle; the first request wakes the service."
    elif unready_since is not None and now - unready_since > inp.settings.ready_grace:
        phase, ready, reason = "Degraded", "False", REASON_REPLICAS_NOT_READY
        message = (
            f"{desired} replica(s) wanted, none ready for {_seconds(now - unready_since)}"
            f" (longer than {_seconds(inp.settings.ready_grace)})."
        )
    elif unready_since is not None:
        phase, ready, reason = "Waking", "False", REASON_WAKING
        message = f"{desired} replica(s) wanted, none ready yet; requests are held."
    else:
        phase, ready, reason = "Active", "True", REASON_SERVING
        message = f"{max(0, inp.ready_replicas)} of {desired} replica(s) ready."

    if load is None and phase != "Degraded":
        reason = REASON_METRICS_UNAVAILABLE
        why = inp.sample.reason or "no data"
        message = (
            f"Metric {spec.scaling.metric} unavailable ({why}): holding {desired} replica(s),"
            f" no scale-down or scale to zero until it returns. {message}"
        )

    return ScalingDecision(
        replicas=desired,
        phase=phase,
        ready_status=ready,
        reason=reason,
        message=message,
        metrics_available=load is not None,
        memory=ScalerMemory(
            recommendations=history,
            last_scale_time=now if desired != current else memory.last_scale_time,
            last_traffic_time=last_traffic,
            watching_since=watching_since,
            unready_since=unready_since,
        ),
    )


def _seconds(span: timedelta) -> str:
    return f"{span.total_seconds():g}s"


def spot_split(desired: int, on_demand_base: int, spot_policy: SpotPolicy) -> tuple[int, int]:
    """(on-demand, spot) replicas for `desired`: Never puts all on on-demand; Require all on spot
    (the CRD makes onDemandBase 0 there; a base given anyway is ignored, never on-demand);
    Prefer pins the first `on_demand_base` replicas to on-demand and the rest prefer spot."""
    if desired < 0 or on_demand_base < 0:
        raise ValueError(f"negative replicas: desired={desired}, onDemandBase={on_demand_base}")
    if spot_policy == "Never":
        return desired, 0
    if spot_policy == "Require":
        return 0, desired
    on_demand = min(on_demand_base, desired)
    return on_demand, desired - on_demand
