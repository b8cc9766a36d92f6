"""Replaying LLM requests through the InferenceService autoscaler: what scale-to-zero costs and
how many requests wait for a cold start, against always-on and a lower bound (the offline
optimum). docs/scale-to-zero.md states the model and its figures.

Nothing here decides replicas: every controller pass hands `decide_scaling` (the operator's own
rules, `sparsam.decisions.scaling`) what Prometheus and the activator would tell it, with a
simulated clock, and carries its decision out. The adaptive policy only changes the
`scaleToZeroAfter` it is given, chosen by `sparsam.decisions.keepalive.choose_keep_alive`.

The world, in 1-second steps (t = 0 is the trace's first request):

- **requests** come from a trace (the Azure LLM conversation trace, Patel et al.,
  "Splitwise", ISCA'24, or a synthetic fleet from `simulate.fleets`): arrival time, context
  and generated tokens. A request occupies a replica for context / `prefill_tokens_per_s` +
  generated / `decode_tokens_per_s` seconds (assumed throughputs, `ServiceModel`; by default
  5,000 and 50 tokens/s, about 4.4 s on average). A replica serves many requests at once;
  queueing at a ready replica is not modelled.
- **controller passes** every `pass_interval_s` (5 s, the operator's --serving-interval
  default), and one in the step after a request is held at no ready replica (the activator's
  wake annotation triggers a pass at once; the step is the latency of that path). While
  requests are held every pass sees `wake_requested` and the held count (rule 10).
- **the metric** as Prometheus would give it: `rps` is the number of requests in the trailing
  `rate_window_s` (60 s, the operator's default `rate(...[1m])`) divided by the window
  (scrape interval and rate()'s extrapolation not modelled); `concurrency` is the requests in
  flight (held or being served) at the pass. `last_request_time` is the latest arrival (the
  activator's gauge), and the in-flight count reaches the decision at every pass (rule 9;
  `World.in_flight_known`). Metrics are never missing or stale here.
- **replicas**: a replica created at step t is billed from t and ready from t + its boot,
  drawn per replica from `World.cold_starts` (`simulate.coldstart`; a policy is told only the
  nominal `cold_start_s`). Scale-down removes not-ready replicas first, then the newest (a
  ReplicaSet deletes unready pods first). A request that arrives while no replica is ready is
  **cold**: it waits until the first replica is ready (its wait is recorded).
- **never cut**: a decision of zero replicas while answers are still streaming would cut
  them; the replay then keeps the replica billed until they end (`drain_seconds`) and counts
  them in `cut_in_flight`. With the in-flight count (rule 9) the decision never does this.
- **the bill** runs over the same horizon for every policy: from one (mean) cold start before
  the first request (so a pre-warmed replica could be ready for it) to the longest cold start
  after the end of the last response (so a request held at the end is still served);
  replicas still up at the end are cut off there.

**The cost model.** `Outcome.cost` = GPU-seconds + for each wake, the wait of the request that
triggered it + replica-seconds short of the oracle's needed(t) beyond the first replica.
Waiting is not free: a schedule that let the wake's first request wait w seconds could have
served it at once by booting w seconds earlier and keeping the replica (at most w more
GPU-seconds), which is why the wait is priced like a replica-second.

Baselines, computed from the same requests:

- **always-on**: `max` replicas for the whole horizon (static provisioning for the peak; no
  cold starts). The `keep_warm` policy (decide_scaling with min 1) is the autoscaled variant
  that never scales to zero.
- **offline optimum**: knows every request in advance. It needs `needed(t)` ready replicas at
  each step: one while any request is being served; more only where the load asks for more
  than one (`rps`: ceil(rate / target) with the rate over a *centred* window, i.e. the oracle
  sees the minute around t, not the minute behind; `concurrency`: ceil(in flight / target)),
  clamped to `max`. A replica is billed while it boots (cold start C: the distribution's
  mean) and while it runs. See `optimum_cost`: with identical replicas the optimum splits into
  layers (replica k is needed where needed(t) >= k), and each layer is the single-replica
  problem, whose optimum is busy time + C for its first start + sum over its idle gaps g of
  min(g, C). It never has a cold start.
  It is a lower bound of the cost model: for one replica (the first layer), any online run
  turns into a schedule with no wait by starting each wake's boot at its first request's
  arrival minus C and keeping the replica until the run's own release, which costs at most
  that first request's wait more (each later held request of the wake arrived after it and
  was answered before the release, never cut); that schedule costs at least the optimum. Exact
  with a fixed cold start; in expectation with a drawn one (each boot's expected billed time
  is the mean, whatever the policy). Layers beyond the first are charged as shortfall, which
  bounds them only approximately; the benchmark checks every policy comes out >= 1x.

The replay models the operator's default queries: the request rate and the last request time
both come from the activator, so `lastRequestTime` is exact and a 1m rate's residue does not
hold a service up (`decisions.scaling`, rule 8): the idle clock starts at the last arrival or
the last pass that saw a request in flight, whichever is later. So the adaptive policy needs no
lag (`choose_keep_alive(lag_s=0)`).

The fleet (`split_fleet`): the whole trace never idles as one service (no gap above 4.3 s), so
scale-to-zero is modelled on a fleet of K low-traffic services made from it: every request is
given to one of K services at random (seeded), service i with probability proportional to
1 / i^s (Zipf; invocation rates of real serverless applications span orders of magnitude,
Shahrad et al., ATC'20). This thinning keeps the trace's diurnal and minute-scale rate changes
in every service, while each service's own arrivals become closer to Poisson.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from sparsam.api.inferenceservice import (
    InferenceServiceSpec,
    Model,
    Replicas,
    Scaling,
    ScalingMetric,
)
from sparsam.decisions.keepalive import KeepAliveHistory, choose_keep_alive
from sparsam.decisions.scaling import (
    MetricSample,
    ScalerMemory,
    ScalingInput,
    ScalingSettings,
    decide_scaling,
)
from sparsam.simulate.coldstart import ColdStarts
from sparsam.simulate.coldstart import fixed as fixed_cold_start
from sparsam.simulate.report import percentile
from sparsam.simulate.traces import TraceError

AZURE_LLM_FILE: Final = "azure_llm_conv_2023.csv"

#: The simulated clock's origin (decide_scaling wants aware datetimes; any origin would do).
EPOCH: Final = datetime(2023, 11, 16, tzinfo=UTC)
_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S.%f"
EXACT_LAST_REQUEST: Final = ScalingSettings(exact_last_request=True)


@dataclass(frozen=True, slots=True)
class Request:
    """One LLM request: `arrival_s` seconds after the trace's first request."""

    arrival_s: float
    context_tokens: int
    generated_tokens: int


def _parse_timestamp(text: str) -> datetime:
    # The trace has 7 fractional digits (100 ns); strptime takes at most 6.
    head, _, frac = text.strip().partition(".")
    return datetime.strptime(f"{head}.{(frac or '0')[:6]}", _TIME_FORMAT).replace(tzinfo=UTC)


def parse_azure_llm(rows: Iterable[Mapping[str, str]]) -> list[Request]:
    """Requests from the trace's rows (`TIMESTAMP, ContextTokens, GeneratedTokens`, times taken
    as UTC, in time order: a row before the one above it is an error naming it), times
    relative to the first request."""
    parsed: list[tuple[datetime, int, int]] = []
    for number, row in enumerate(rows, start=1):
        try:
            entry = (
                _parse_timestamp(row["TIMESTAMP"]),
                int(row["ContextTokens"]),
                int(row["GeneratedTokens"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceError(
                f"Azure LLM trace row {number} (after the header) lacks {exc}: {dict(row)!r:.200}"
            ) from exc
        if parsed and entry[0] < parsed[-1][0]:
            raise TraceError(
                f"Azure LLM trace row {number} (after the header): {row['TIMESTAMP']} is"
                " before the row above it (the trace must be in time order)"
            )
        parsed.append(entry)
    if not parsed:
        return []
    start = parsed[0][0]
    return [Request((at - start).total_seconds(), ctx, gen) for at, ctx, gen in parsed]


def load_azure_llm(path: Path) -> list[Request]:
    try:
        with path.open(newline="") as handle:
            return parse_azure_llm(csv.DictReader(handle))
    except FileNotFoundError as exc:
        raise TraceError(f"no Azure LLM trace at {path} (pass --traces)") from exc


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """How long a request occupies a replica, from its tokens (assumed throughputs of one
    request on one GPU: prefill is compute-bound and fast, decoding one token at a time)."""

    prefill_tokens_per_s: float = 5000.0
    decode_tokens_per_s: float = 50.0

    def service_s(self, request: Request) -> float:
        return (
            request.context_tokens / self.prefill_tokens_per_s
            + request.generated_tokens / self.decode_tokens_per_s
        )


@dataclass(frozen=True, slots=True)
class World:
    """What the replay plays around the scaler (see the module docstring).

    `cold_start_s` is the nominal cold start, the one figure a policy is told (the fixed
    keep-alive equal to it, the adaptive policy's prior); each replica's real boot is drawn
    from `cold_starts` (None: always exactly `cold_start_s`), seeded per service."""

    cold_start_s: float
    pass_interval_s: int = 5
    rate_window_s: int = 60
    service: ServiceModel = field(default_factory=ServiceModel)
    cold_starts: ColdStarts | None = None
    #: The activator's in-flight count reaches the decision (`decisions.scaling`, rule 9).
    #: False replays the scaler without it: requests in flight can be cut (then drained).
    in_flight_known: bool = True
    seed: int = 0

    @property
    def distribution(self) -> ColdStarts:
        return self.cold_starts or fixed_cold_start(self.cold_start_s)

    @property
    def optimum_cold_start_s(self) -> float:
        """The boot the offline optimum pays: the mean draw (exactly `cold_start_s` when it is
        fixed), so its cost is a lower bound in expectation (module docstring)."""
        return self.distribution.mean_s


@dataclass(frozen=True, slots=True)
class Adaptive:
    """Feed `choose_keep_alive` over the last `history` inter-arrival gaps to the scaler as
    scaleToZeroAfter at every pass."""

    history: int = 128
    min_gaps: int = 8
    ceiling_s: float = 3600.0
    #: Extra cost per cold start in the keep-alive's sum, as a multiple of the cold start.
    penalty_x_cold_start: float = 0.0


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    spec: InferenceServiceSpec
    adaptive: Adaptive | None = None


@dataclass(frozen=True, slots=True)
class Horizon:
    """The billed steps [start, end): one (mean) cold start before the first request (a
    pre-warmed replica can be ready for it) to the longest cold start after the end of the
    last response (a request held at the end is still served); the same for every service of
    a fleet."""

    start: int
    end: int

    @property
    def seconds(self) -> int:
        return self.end - self.start


def horizon_of(requests: Sequence[Request], world: World) -> Horizon:
    dist = world.distribution
    before = math.ceil(max(world.cold_start_s, world.optimum_cold_start_s))
    after = math.ceil(max(world.cold_start_s, dist.max_s))
    if not requests:
        return Horizon(-before, 0)
    last = max(r.arrival_s + world.service.service_s(r) for r in requests)
    return Horizon(math.floor(requests[0].arrival_s) - before, math.ceil(last) + 1 + after)


@dataclass(slots=True)
class Outcome:
    """One policy's run over one or more services (outcomes of a fleet add up)."""

    policy: str
    gpu_seconds: float = 0.0
    requests: int = 0
    #: Requests that arrived with no ready replica and waited.
    cold_requests: int = 0
    #: Scale-ups from zero replicas (each pays one cold start).
    wakes: int = 0
    #: Seconds each cold request waited.
    waits: list[float] = field(default_factory=list)
    #: Per wake, the wait of the request that triggered it (the cost model's wake charge).
    wake_waits: list[float] = field(default_factory=list)
    #: Replica-seconds with fewer ready replicas than the oracle's needed(t).
    short_replica_seconds: float = 0.0
    #: The same, beyond the first replica (the cost model's shortfall charge).
    short_beyond_first_seconds: float = 0.0
    #: Requests in flight when the scaler went to zero (drained, billed; should be 0).
    cut_in_flight: int = 0
    #: GPU-seconds of replicas kept only to finish such requests (inside gpu_seconds).
    drain_seconds: float = 0.0
    passes: int = 0

    def add(self, other: Outcome) -> None:
        self.gpu_seconds += other.gpu_seconds
        self.requests += other.requests
        self.cold_requests += other.cold_requests
        self.wakes += other.wakes
        self.waits.extend(other.waits)
        self.wake_waits.extend(other.wake_waits)
        self.short_replica_seconds += other.short_replica_seconds
        self.short_beyond_first_seconds += other.short_beyond_first_seconds
        self.cut_in_flight += other.cut_in_flight
        self.drain_seconds += other.drain_seconds
        self.passes += other.passes

    @property
    def cold_start_rate(self) -> float:
        return self.cold_requests / self.requests if self.requests else 0.0

    @property
    def cost(self) -> float:
        """The cost model (module docstring): GPU-seconds, plus each wake's first wait, plus
        replica-seconds short of the oracle beyond the first replica."""
        return self.gpu_seconds + sum(self.wake_waits) + self.short_beyond_first_seconds

    def added_latency(self, q: float) -> float:
        """The q-th percentile over all requests of the time added by waiting (0 for a request
        that found a ready replica)."""
        if not self.requests:
            return 0.0
        zeros = [0.0] * (self.requests - len(self.waits))
        return percentile([*zeros, *self.waits], q)


def _at(step: float) -> datetime:
    return EPOCH + timedelta(seconds=step)


def replay(
    requests: Sequence[Request],
    policy: Policy,
    world: World,
    horizon: Horizon | None = None,
    needed: Sequence[int] | None = None,
    seed: int | None = None,
) -> Outcome:
    """Run one service's requests (sorted by arrival) through `decide_scaling` under `policy`;
    `needed` (per step of the horizon, from `needed_replicas`) adds the short replica-seconds.
    Boots are drawn from `world.distribution` with `seed` (default `world.seed`): every policy
    given the same seed sees the same sequence of boot times."""
    span = horizon or horizon_of(requests, world)
    spec, scaling = policy.spec, policy.spec.scaling
    nominal = world.cold_start_s
    dist = world.distribution
    rng = random.Random(world.seed if seed is None else seed)  # noqa: S311 - seeded draws
    service = [world.service.service_s(r) for r in requests]
    out = Outcome(policy.name, requests=len(requests))
    memory = ScalerMemory()
    history = KeepAliveHistory(limit=policy.adaptive.history) if policy.adaptive else None
    keep_alive_for: tuple[float, ...] | None = None  # history the cached spec was made from
    ready_at: list[int] = []  # per replica, the step it is ready from
    ends: list[float] = []  # heap: when each request being served is answered
    held: list[tuple[float, float]] = []  # (arrival, service seconds) waiting for a replica
    window: deque[float] = deque()  # arrivals within the rate window
    last_arrival: float | None = None
    drain_until = -math.inf  # a replica cut with requests in flight is billed until they end
    wake_now = False
    i, n = 0, len(requests)
    for t in range(span.start, span.end):
        ready = sum(1 for r in ready_at if r <= t)
        if wake_now or (t - span.start) % world.pass_interval_s == 0:
            wake_now = False
            while ends and ends[0] <= t:
                heapq.heappop(ends)
            while window and window[0] <= t - world.rate_window_s:
                window.popleft()
            in_flight = len(ends) + len(held)  # the activator's gauge counts held requests
            if scaling.metric == "rps":
                value = len(window) / world.rate_window_s
            else:
                value = float(in_flight)
            adaptive = policy.adaptive
            if adaptive is not None and history is not None and keep_alive_for is not history.gaps:
                # Recomputed only when a gap was added (the history is a new tuple then).
                keep = choose_keep_alive(
                    history.gaps,
                    nominal,
                    cold_start_penalty_s=adaptive.penalty_x_cold_start * nominal,
                    min_gaps=adaptive.min_gaps,
                    ceiling_s=adaptive.ceiling_s,
                )
                spec = replace(
                    policy.spec,
                    scaling=replace(scaling, scale_to_zero_after=timedelta(seconds=keep)),
                )
                keep_alive_for = history.gaps
            decision = decide_scaling(
                ScalingInput(
                    spec=spec,
                    replicas=len(ready_at),
                    ready_replicas=ready,
                    sample=MetricSample(value),
                    last_request_time=None if last_arrival is None else _at(last_arrival),
                    wake_requested=bool(held),
                    in_flight=float(in_flight) if world.in_flight_known else None,
                    held_requests=len(held),
                    memory=memory,
                    # The activator's counter and last-request gauge, as the operator's
                    # default queries read them (decisions.scaling, rule 8).
                    settings=EXACT_LAST_REQUEST,
                ),
                _at(t),
            )
            out.passes += 1
            memory = decision.memory
            want = decision.replicas
            if want > len(ready_at):
                if not ready_at:
                    out.wakes += 1
                for _ in range(want - len(ready_at)):
                    ready_at.append(t + math.ceil(dist.draw(rng)))
            elif want < len(ready_at):
                ready_at.sort()  # not-ready and newest replicas have the latest ready step
                del ready_at[want:]
                if not ready_at and ends and ready:
                    # Cut with answers still streaming: the pod drains them (billed) but the
                    # policy is charged with the cut.
                    out.cut_in_flight += len(ends)
                    drain_until = max(drain_until, max(ends))
            ready = sum(1 for r in ready_at if r <= t)
        if ready and held:
            out.wake_waits.append(t - held[0][0])
            for arrival, seconds in held:
                out.waits.append(t - arrival)
                heapq.heappush(ends, t + seconds)
            held.clear()
        billed = len(ready_at)
        if not ready_at and t < drain_until:
            billed = 1
            out.drain_seconds += 1
        out.gpu_seconds += billed
        if needed is not None:
            short = max(0, needed[t - span.start] - ready)
            out.short_replica_seconds += short
            out.short_beyond_first_seconds += max(0, needed[t - span.start] - max(ready, 1))
        while i < n and requests[i].arrival_s < t + 1:
            arrival = requests[i].arrival_s
            if last_arrival is not None and history is not None:
                history = history.observe(arrival - last_arrival)
            last_arrival = arrival
            window.append(arrival)
            if ready:
                heapq.heappush(ends, arrival + service[i])
            else:
                out.cold_requests += 1
                held.append((arrival, service[i]))
                wake_now = True
            i += 1
    return out


def needed_replicas(
    requests: Sequence[Request], spec: InferenceServiceSpec, world: World, horizon: Horizon
) -> list[int]:
    """The oracle's ready replicas per step of `horizon` (module docstring): one while a
    request is being served, more where the load asks for more, clamped to spec.replicas.max."""
    size = horizon.seconds
    serving = [0] * (size + 1)  # difference array: requests overlapping each step
    for r in requests:
        first = math.floor(r.arrival_s) - horizon.start
        last = math.ceil(r.arrival_s + world.service.service_s(r)) - horizon.start
        serving[max(0, first)] += 1
        serving[min(size, max(first + 1, last))] -= 1
    overlap, running = [0] * size, 0
    for k in range(size):
        running += serving[k]
        overlap[k] = running
    top, target = spec.replicas.max, spec.scaling.target
    if spec.scaling.metric == "concurrency":
        return [min(top, math.ceil(c / target - 1e-9)) if c else 0 for c in overlap]
    arrivals = [r.arrival_s for r in requests]
    half = world.rate_window_s / 2
    needed = []
    for k in range(size):
        t = horizon.start + k
        count = bisect.bisect_left(arrivals, t + half) - bisect.bisect_left(arrivals, t - half)
        by_rate = math.ceil(count / world.rate_window_s / target - 1e-9)
        busy = 1 if overlap[k] else 0
        needed.append(busy if by_rate <= 1 else min(top, by_rate))
    return needed


def keep_or_release_cost(busy: Sequence[tuple[float, float]], cold_start_s: float) -> float:
    """The offline optimum for one replica that must be ready during every `busy` interval
    (start, end): busy time + one cold start for its first start + min(gap, cold start) per
    idle gap between the merged intervals. 0 with nothing to serve."""
    merged: list[list[float]] = []
    for start, end in sorted(busy):
        if end < start:
            raise ValueError(f"busy interval ends before it starts: ({start}, {end})")
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if not merged:
        return 0.0
    cost = cold_start_s + sum(end - start for start, end in merged)
    for (_, end), (start, _) in itertools.pairwise(merged):
        cost += min(start - end, cold_start_s)
    return cost


def optimum_cost(needed: Sequence[int], cold_start_s: float) -> float:
    """GPU-seconds of the offline optimum for `needed` ready replicas per 1-second step.

    With identical replicas billed while they boot and while they run, any schedule's ready
    count r(t) >= needed(t) splits into layers {r >= k}, each of which needs a replica to
    become ready once per interval (a boot of C billed seconds); so the schedule costs at least
    the sum over k of the single-replica optimum for {needed >= k}, and running one replica per
    layer as `keep_or_release_cost` says reaches that sum."""
    top = max(needed, default=0)
    total = 0.0
    for k in range(1, top + 1):
        runs: list[tuple[float, float]] = []
        begin: int | None = None
        for step, count in enumerate(needed):
            if count >= k and begin is None:
                begin = step
            elif count < k and begin is not None:
                runs.append((begin, step))
                begin = None
        if begin is not None:
            runs.append((begin, len(needed)))
        total += keep_or_release_cost(runs, cold_start_s)
    return total


def split_fleet(
    requests: Sequence[Request], services: int, zipf_s: float = 1.0, seed: int = 0
) -> list[list[Request]]:
    """Thin the trace into `services` streams: each request goes to service i (1-based) with
    probability proportional to 1 / i^zipf_s, drawn with a seeded generator."""
    if services < 1:
        raise ValueError(f"a fleet needs at least one service, not {services}")
    weights = [1.0 / (i + 1) ** zipf_s for i in range(services)]
    rng = random.Random(seed)  # noqa: S311 - a seeded split, not cryptography
    picks = rng.choices(range(services), weights=weights, k=len(requests))
    fleet: list[list[Request]] = [[] for _ in range(services)]
    for request, pick in zip(requests, picks, strict=True):
        fleet[pick].append(request)
    return fleet


def service_spec(
    metric: ScalingMetric,
    target: float,
    max_replicas: int,
    scale_to_zero_after_s: float,
    min_replicas: int = 0,
    scale_down_delay_s: float = 60.0,
) -> InferenceServiceSpec:
    return InferenceServiceSpec(
        model=Model(uri="sim://azure-llm-conv"),
        replicas=Replicas(min=min_replicas, max=max_replicas),
        scaling=Scaling(
            metric=metric,
            target=target,
            scale_to_zero_after=timedelta(seconds=scale_to_zero_after_s),
            scale_down_delay=timedelta(seconds=scale_down_delay_s),
        ),
    )


#: The fixed keep-alives whose runs draw the frontier (10 s to 10 min).
FRONTIER_KEEP_ALIVES_S: Final = (10, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600)
#: The policy the targets are about: the candidate for the operator's default (the CRD's
#: default today is a fixed 5m, itself a point of the frontier).
DEFAULT_POLICY: Final = "adaptive"
#: The policies other than the frontier's fixed keep-alives (`policies_for`).
NAMED_POLICIES: Final = ("fixed_5m", "fixed_cold_start", "adaptive", "adaptive_2x", "keep_warm")


def frontier_name(keep_s: float) -> str:
    return f"keep_{keep_s:g}s"


def policies_for(
    metric: ScalingMetric,
    target: float,
    max_replicas: int,
    cold_start_s: float,
    frontier: Sequence[float] = FRONTIER_KEEP_ALIVES_S,
) -> list[Policy]:
    """The online policies compared for one nominal cold start: the CRD's default
    scaleToZeroAfter (5m), a fixed keep-alive equal to the cold start (the 2-competitive
    ski-rental choice), the adaptive keep-alive on GPU-seconds alone and with each cold start
    counted twice (`adaptive_2x`: its wait priced like its boot), keep-warm (min 1:
    autoscaled, never to zero), then one fixed keep-alive per `frontier` point."""
    fixed = service_spec(metric, target, max_replicas, cold_start_s)
    return [
        Policy("fixed_5m", service_spec(metric, target, max_replicas, 300.0)),
        Policy("fixed_cold_start", fixed),
        Policy("adaptive", fixed, Adaptive()),
        Policy("adaptive_2x", fixed, Adaptive(penalty_x_cold_start=1.0)),
        Policy("keep_warm", service_spec(metric, target, max_replicas, 300.0, min_replicas=1)),
        *(
            Policy(frontier_name(k), service_spec(metric, target, max_replicas, k))
            for k in frontier
        ),
    ]


@dataclass(slots=True)
class Scenario:
    """Every policy and both baselines over a set of services, for one metric and cold-start
    distribution."""

    name: str
    metric: ScalingMetric
    cold_start: str
    nominal_cold_start_s: float
    services: int
    requests: int
    horizon_s: int
    always_on: float
    optimum: float
    outcomes: dict[str, Outcome]
    frontier: tuple[float, ...] = FRONTIER_KEEP_ALIVES_S

    def row(self, policy: str) -> dict[str, Any]:
        out = self.outcomes[policy]
        return {
            "cost": round(out.cost, 1),
            "vs_optimum": _ratio(out.cost, self.optimum),
            "gpu_s": round(out.gpu_seconds, 1),
            "wake_charge_s": round(sum(out.wake_waits), 1),
            "short_charge_s": round(out.short_beyond_first_seconds, 1),
            "vs_always_on": _ratio(out.cost, self.always_on),
            "cold_fraction": round(out.cold_start_rate, 5),
            "cold_requests": out.cold_requests,
            "wakes": out.wakes,
            "added_p50_s": round(out.added_latency(50), 2),
            "added_p99_s": round(out.added_latency(99), 2),
            "wait_p50_s": round(percentile(out.waits, 50), 2),
            "wait_p99_s": round(percentile(out.waits, 99), 2),
            "cut_in_flight": out.cut_in_flight,
            "drain_s": round(out.drain_seconds, 1),
        }

    def frontier_points(self) -> list[tuple[float, float, float]]:
        """(keep-alive, cost / optimum, cold fraction) of the fixed keep-alives, by keep-alive."""
        points = []
        for keep in self.frontier:
            out = self.outcomes.get(frontier_name(keep))
            if out is not None:
                points.append(
                    (keep, out.cost / self.optimum if self.optimum else 0.0, out.cold_start_rate)
                )
        return points

    def frontier_cold_at(self, cost_ratio: float) -> float:
        """The cold fraction the fixed keep-alive frontier reaches at `cost_ratio` (x optimum):
        linear between the neighbouring points by cost, over the points no cheaper point
        beats (a keep-alive dominated by a cheaper one with fewer cold requests is not on it);
        beyond its ends, the end point's."""
        pts: list[tuple[float, float]] = []
        for c, f in sorted((c, f) for _, c, f in self.frontier_points()):
            if not pts or f < pts[-1][1]:
                pts.append((c, f))
        if not pts:
            return 1.0
        if cost_ratio <= pts[0][0]:
            return pts[0][1]
        for (c0, f0), (c1, f1) in itertools.pairwise(pts):
            if c0 <= cost_ratio <= c1:
                return f0 if c1 == c0 else f0 + (f1 - f0) * (cost_ratio - c0) / (c1 - c0)
        return pts[-1][1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "cold_start": self.cold_start,
            "nominal_cold_start_s": self.nominal_cold_start_s,
            "services": self.services,
            "requests": self.requests,
            "horizon_s": self.horizon_s,
            "always_on_gpu_s": round(self.always_on, 1),
            "optimum_cost": round(self.optimum, 1),
            "optimum_vs_always_on": _ratio(self.optimum, self.always_on),
            "policies": {name: self.row(name) for name in self.outcomes},
            "frontier": [
                {"keep_alive_s": k, "vs_optimum": round(c, 4), "cold_fraction": round(f, 5)}
                for k, c, f in self.frontier_points()
            ],
        }


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 4) if base > 0 else None


def run_scenario(
    name: str,
    fleet: Sequence[Sequence[Request]],
    metric: ScalingMetric,
    target: float,
    max_replicas: int,
    world: World,
    frontier: Sequence[float] = FRONTIER_KEEP_ALIVES_S,
) -> Scenario:
    """All policies of `policies_for` and both baselines over `fleet` (one list of requests
    per service), on one horizon shared by every service. Service k's boots are drawn with
    seed (world.seed, k), the same for every policy."""
    everything = sorted((r for service in fleet for r in service), key=lambda r: r.arrival_s)
    span = horizon_of(everything, world)
    policies = policies_for(metric, target, max_replicas, world.cold_start_s, frontier)
    outcomes = {p.name: Outcome(p.name) for p in policies}
    optimum = 0.0
    for k, requests in enumerate(fleet):
        needed = needed_replicas(requests, policies[0].spec, world, span)
        optimum += optimum_cost(needed, world.optimum_cold_start_s)
        seed = world.seed * 1_000_003 + k
        for policy in policies:
            outcomes[policy.name].add(replay(requests, policy, world, span, needed, seed))
    return Scenario(
        name=name,
        metric=metric,
        cold_start=world.distribution.name,
        nominal_cold_start_s=world.cold_start_s,
        services=len(fleet),
        requests=len(everything),
        horizon_s=span.seconds,
        always_on=float(max_replicas * span.seconds * len(fleet)),
        optimum=optimum,
        outcomes=outcomes,
        frontier=tuple(frontier),
    )


def markdown(scenarios: Sequence[Scenario]) -> str:
    """One table: a row per scenario and policy (frontier points included), baselines first."""
    lines = [
        "| scenario | metric | policy | cost (GPU-s eq.) | x optimum | cold fraction"
        " | added p50 s | added p99 s | wakes | cut in flight |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        head = f"| {s.name} | {s.metric}"
        lines.append(f"{head} | offline optimum | {s.optimum:,.0f} | 1.000 | 0 | 0 | 0 | - | 0 |")
        lines.append(
            f"{head} | always-on (max) | {s.always_on:,.0f}"
            f" | {_fmt(_ratio(s.always_on, s.optimum))} | 0 | 0 | 0 | - | 0 |"
        )
        for name in s.outcomes:
            row = s.row(name)
            lines.append(
                f"{head} | {name} | {row['cost']:,.0f} | {_fmt(row['vs_optimum'])}"
                f" | {row['cold_fraction']:.4f} | {row['added_p50_s']:.1f}"
                f" | {row['added_p99_s']:.1f} | {row['wakes']} | {row['cut_in_flight']} |"
            )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
