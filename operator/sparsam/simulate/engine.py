"""The event loop: replays jobs through `plan_capacity` / `apply_plan` with a simulated clock.

Nothing here decides capacity: at every event time the engine hands the current
`ClusterState` to `sparsam.decisions.capacity.plan_capacity(state, now)` and carries the plan
out with `apply_plan(state, plan, now)` (pods bound where the plan put them: the planner's
placements stand in for kube-scheduler). The engine only plays the world around it:

- **events**: job arrivals, nodes becoming ready (created + the provisioning delay), spot
  preemptions, job completions, and the next scale-down deadline (an empty node's
  empty_since + its pool's scaleDownAfter). The planner runs once per event time, never per
  simulated minute.
- **gangs**: a rigid job's pods are bound only when the plan places all of them (a gang
  scheduler such as Kueue or coscheduling does this); a job runs only while every pod is on a
  ready node.
- **the market** (`market.SpotMarket`, per spot pool; a spot pool without one has
  `World.spot_hazard_per_hour` and nothing else): a spot node lives an exponential time (the
  pool's hazard) after it becomes ready; a group loss preempts many of the pool's nodes at
  once; when a node goes, every job with a pod on it loses its work since its last checkpoint,
  and all its pods go back to pending (the job restarts from the checkpoint once placed).
  Preemptions do not mark the spot offering as failing (the real controller does not either).
- **launches**: the plan's new nodes are launched pool by pool (`market.SpotLaunches`); in a
  refusal window the launch raises `InsufficientCapacity` and the engine reacts as the
  capacity controller does: the pool's offering becomes `refused_offering(now)` (unavailable
  for the controller's TTL, a recent failure for onDemandFallbackAfter), `expire_offerings`
  runs before every plan, and the cluster is planned again with that knowledge (the next
  pool's pass; taken as instant, where the controller passes every 10 s), so Prefer pods go
  to another healthy spot pool, then on-demand. Nothing of a refused plan is carried out.
- **cost**: a node costs its pool's pricePerHour from creation (boot time is paid) until it
  is removed or preempted; the run ends at the last job's completion.
- **the deadline-aware policy** (`World.spot_deadline`; None: the previous policy): at arrival
  and at every restart `decisions.spot_deadline.spot_is_safe` says whether a job's pods Prefer
  spot or are Never (on-demand); a job starting on spot gets a `switch` event when
  `spot_until_s` says its slack is spent (it writes a checkpoint and restarts on on-demand);
  a job checkpoints at the cadence of the pool it runs on.
- **dropped jobs**: a job that has not finished when nothing more can happen (no event left)
  or at the horizon (`World.horizon_s`; default: the last submission + 7 days + 10x the
  longest runtime) is dropped: counted and reported, never silently left out.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sparsam.api import constants as c
from sparsam.api.common import SpotPolicy
from sparsam.decisions.capacity import (
    OFFERING_TTL,
    ClusterState,
    NewNode,
    Node,
    Plan,
    Pod,
    PodKey,
    apply_plan,
    expire_offerings,
    plan_capacity,
    refused_offering,
)
from sparsam.decisions.spot_deadline import SpotOutlook, spot_is_safe, spot_until_s
from sparsam.providers.nodepool import InsufficientCapacity
from sparsam.simulate.market import Availability, SpotLaunches, SpotMarket
from sparsam.simulate.policies import Policy, job_pods
from sparsam.simulate.spot import checkpoint_interval_s
from sparsam.simulate.traces import Job

#: The simulated clock starts here (the planner wants aware datetimes; any origin would do).
EPOCH = datetime(2017, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class World:
    """What the engine plays: the provisioning delay, the spot markets (by spot pool name; a
    spot pool without an entry has the hazard `spot_hazard_per_hour` per node-hour and
    nothing else) and the checkpoint cost C (seconds per checkpoint). Jobs on a policy with a
    spot pool checkpoint every `checkpoint_interval_s` if it is set, else every Young/Daly tau
    for the highest node hazard of the policy's spot pools."""

    provisioning_delay_s: float = 120.0
    spot_hazard_per_hour: float = 0.0
    checkpoint_cost_s: float = 60.0
    seed: int = 0
    checkpoint_interval_s: float | None = None
    markets: Mapping[str, SpotMarket] = field(default_factory=dict)
    #: How long a refused pool gets no new nodes: the capacity controller's default.
    offering_ttl_s: float = OFFERING_TTL.total_seconds()
    #: Jobs not finished by then are dropped; None: see the module docstring.
    horizon_s: float | None = None
    #: The deadline-aware policy (`decisions.spot_deadline`): a job (re)starts on spot only
    #: while it is expected to finish within runtime x (1 + this) of its submission, else on
    #: on-demand; and a job checkpoints at the cadence of the pool it runs on (on-demand: no
    #: hazard). None: today's policy (every pod Prefers spot; every job checkpoints at the
    #: cadence of the most hazardous spot pool wherever it runs).
    spot_deadline: float | None = None

    def market(self, pool: str) -> SpotMarket:
        return self.markets.get(pool) or SpotMarket(hazard_per_hour=self.spot_hazard_per_hour)

    def tau_s(self, pods: int, hazard_per_hour: float | None = None) -> float:
        """Seconds of useful work between two checkpoints of a job of `pods` pods (inf: it
        never checkpoints)."""
        if self.checkpoint_interval_s is not None:
            return self.checkpoint_interval_s
        hazard = self.spot_hazard_per_hour if hazard_per_hour is None else hazard_per_hour
        return checkpoint_interval_s(self.checkpoint_cost_s, hazard, pods)


@dataclass(slots=True)
class PoolStats:
    """What happened in one pool during a run."""

    pool: str
    spot: bool
    launched: int = 0
    node_hours: float = 0.0
    cost: float = 0.0
    preemptions: int = 0
    group_losses: int = 0
    #: Launches refused (InsufficientCapacity) and the nodes they asked for.
    refusals: int = 0
    refused_nodes: int = 0
    #: Fraction of the run's time the pool was refusing launches.
    refused_time_fraction: float = 0.0


@dataclass(slots=True)
class JobRun:
    index: int
    job: Job
    pods: tuple[Pod, ...]
    #: Wall seconds of running between checkpoints (tau + C); inf: never checkpoints.
    period_s: float
    #: Wall seconds of running the job needs: runtime * (1 + C / tau).
    wall_work_s: float
    #: Wall seconds per second of useful work (1 + C / tau; 1: no checkpoints).
    factor: float = 1.0
    done_s: float = 0.0
    started: float | None = None
    epoch: int = 0
    finished: float | None = None
    interruptions: int = 0
    lost_s: float = 0.0
    #: Moves from spot to on-demand at a fresh checkpoint (`decisions.spot_deadline`).
    switches: int = 0


@dataclass(slots=True)
class NodeMeta:
    created: float
    price_per_hour: float
    gpus: int
    spot: bool
    pool: str
    ready: bool = False


@dataclass(slots=True)
class Sample:
    """The cluster right after the events at `t` were handled and the plan carried out."""

    t: float
    provisioned_gpus: int
    allocated_gpus: int
    cost: float


@dataclass(slots=True)
class Outcome:
    """Everything a policy's run produced; `report` turns it into metrics."""

    policy: str
    jobs: list[JobRun]
    cost: float
    provisioned_gpu_s: float
    allocated_gpu_s: float
    end_s: float
    node_preemptions: int
    plans: int
    samples: list[Sample] = field(default_factory=list)
    pools: dict[str, PoolStats] = field(default_factory=dict)
    #: Ids of the jobs that never finished (see the module docstring).
    dropped: list[str] = field(default_factory=list)

    @property
    def refusals(self) -> int:
        return sum(p.refusals for p in self.pools.values())

    @property
    def group_losses(self) -> int:
        return sum(p.group_losses for p in self.pools.values())


class Simulation:
    """One policy over one trace. `run()` it once."""

    def __init__(self, jobs: Iterable[Job], policy: Policy, world: World) -> None:
        self.policy = policy
        self.world = world
        # Seeded simulation draws, not cryptography.
        self.rng = random.Random(f"{world.seed}:{policy.name}")  # noqa: S311
        self.group_rng = random.Random(f"{world.seed}:{policy.name}:group")  # noqa: S311
        self.pools = {pool.name: pool for pool in policy.pools}
        spot = [p.name for p in policy.pools if p.capacity_type == c.CAPACITY_SPOT]
        self.markets = {name: world.market(name) for name in spot}
        self.availability = {
            name: Availability(
                market.refusals,
                random.Random(f"{world.seed}:{name}:availability"),  # noqa: S311
            )
            for name, market in self.markets.items()
            if market.refusals is not None
        }
        self.launches = SpotLaunches(self.availability)
        self.pool_stats = {
            p.name: PoolStats(p.name, p.capacity_type == c.CAPACITY_SPOT) for p in policy.pools
        }
        hazard = max((m.node_hazard_per_hour for m in self.markets.values()), default=0.0)
        self.jobs: list[JobRun] = []
        for index, job in enumerate(jobs):
            pods = job_pods(job, self._gpus_per_node(), policy.spot)
            period, wall = math.inf, job.runtime_s
            if spot:
                tau = world.tau_s(len(pods), hazard)
                if math.isfinite(tau) and tau > 0:
                    period = tau + world.checkpoint_cost_s
                    wall = job.runtime_s * (1.0 + world.checkpoint_cost_s / tau)
            factor = wall / job.runtime_s if job.runtime_s > 0 else 1.0
            self.jobs.append(JobRun(index, job, pods, period, wall, factor=factor))
        self.state = ClusterState(pools=policy.pools, settings=policy.planner)
        self.meta: dict[str, NodeMeta] = {}
        self.owner: dict[PodKey, JobRun] = {k: r for r in self.jobs for k in _keys(r.pods)}
        self.where: dict[PodKey, str] = {}
        self.events: list[tuple[float, int, str, object]] = []
        self.seq = itertools.count()
        self.names = itertools.count()
        self.waiting: set[int] = set()
        self.cost_closed = 0.0
        self.provisioned_gpu_s = 0.0
        self.allocated_gpu_s = 0.0
        self.preemptions = 0
        self.plans = 0
        self.wakes: set[float] = set()
        self.samples: list[Sample] = []
        self.unfinished = len(self.jobs)
        #: While True (the static policy's first plan), new nodes are ready at once.
        self.warm_start = False

    def _gpus_per_node(self) -> int:
        return max(pool.gpus_per_node for pool in self.policy.pools)

    def _push(self, t: float, kind: str, data: object = None) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, data))

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> Outcome:
        for index, run in enumerate(self.jobs):
            self._push(run.job.submit_s, "arrive", index)
        first = min((run.job.submit_s for run in self.jobs), default=0.0)
        last = first
        for name, market in self.markets.items():
            if market.group_loss_per_hour > 0:
                self._push(first + self._group_gap(name), "group", name)
        if self.policy.ready_at_start:
            self.warm_start = True
            self._step(last)
            self.warm_start = False
        horizon = self.world.horizon_s
        if horizon is None:
            horizon = (
                max((run.job.submit_s for run in self.jobs), default=0.0)
                + 7 * 86400.0
                + 10 * max((run.job.runtime_s for run in self.jobs), default=0.0)
            )
        while self.events and self.unfinished and self.events[0][0] <= horizon:
            t = self.events[0][0]
            self._accrue(last, t)
            last = t
            while self.events and self.events[0][0] == t:
                _, _, kind, data = heapq.heappop(self.events)
                getattr(self, f"_on_{kind}")(t, data)
            self._step(t)
        for name in list(self.meta):
            self._close(name, last)
        for stats in self.pool_stats.values():
            windows = self.availability.get(stats.pool)
            if windows is not None and last > first:
                stats.refused_time_fraction = windows.refused_seconds(first, last) / (last - first)
        return Outcome(
            self.policy.name,
            self.jobs,
            self.cost_closed,
            self.provisioned_gpu_s,
            self.allocated_gpu_s,
            last,
            self.preemptions,
            self.plans,
            self.samples,
            self.pool_stats,
            [run.job.id for run in self.jobs if run.finished is None],
        )

    def _close(self, name: str, t: float) -> None:
        """The node is gone (removed, preempted) or the run is over: pay for it."""
        meta = self.meta.pop(name)
        hours = (t - meta.created) / 3600
        self.cost_closed += meta.price_per_hour * hours
        stats = self.pool_stats[meta.pool]
        stats.node_hours += hours
        stats.cost += meta.price_per_hour * hours

    def _group_gap(self, pool: str) -> float:
        return self.group_rng.expovariate(self.markets[pool].group_loss_per_hour) * 3600

    def _accrue(self, start: float, end: float) -> None:
        span = end - start
        if span <= 0:
            return
        self.provisioned_gpu_s += span * sum(m.gpus for m in self.meta.values())
        self.allocated_gpu_s += span * self._allocated_gpus()

    def _allocated_gpus(self) -> int:
        return sum(
            pod.requests.gpus
            for node in self.state.nodes
            if self.meta[node.name].ready
            for pod in node.pods
        )

    # --- events --------------------------------------------------------------------------

    def _on_arrive(self, t: float, index: object) -> None:
        assert isinstance(index, int)
        run = self.jobs[index]
        self.waiting.add(index)
        self._choose_capacity(run, t)
        self.state = replace(self.state, pending=self.state.pending + run.pods)

    def _on_ready(self, t: float, name: object) -> None:
        assert isinstance(name, str)
        meta = self.meta.get(name)
        if meta is None or meta.ready:
            return
        meta.ready = True
        self.state = replace(
            self.state,
            nodes=tuple(replace(n, ready=True) if n.name == name else n for n in self.state.nodes),
        )
        hazard = self.markets[meta.pool].hazard_per_hour if meta.spot else 0.0
        if hazard > 0:
            hours = self.rng.expovariate(hazard)
            self._push(t + hours * 3600, "preempt", name)

    def _on_group(self, t: float, pool: object) -> None:
        """A group loss in `pool`: each of its nodes goes with the event's probability."""
        assert isinstance(pool, str)
        market = self.markets[pool]
        names = [n for n, m in self.meta.items() if m.pool == pool]
        lost = [n for n in names if self.group_rng.random() < market.group_loss_fraction]
        if lost:
            self.pool_stats[pool].group_losses += 1
        for name in lost:
            self._on_preempt(t, name)
        self._push(t + self._group_gap(pool), "group", pool)

    def _on_preempt(self, t: float, name: object) -> None:
        assert isinstance(name, str)
        meta = self.meta.get(name)
        if meta is None:
            return
        self.preemptions += 1
        self.pool_stats[meta.pool].preemptions += 1
        self._close(name, t)
        victim = next(n for n in self.state.nodes if n.name == name)
        hit = {self.owner[p.key].index: self.owner[p.key] for p in victim.pods}
        self.state = replace(self.state, nodes=tuple(n for n in self.state.nodes if n.name != name))
        for run in hit.values():
            self._interrupt(run, t)

    def _interrupt(self, run: JobRun, t: float) -> None:
        if run.started is not None:
            total = run.done_s + (t - run.started)
            if math.isfinite(run.period_s):
                # Checkpoints every period since this start (a restart resumes from one).
                ran = t - run.started
                kept = run.done_s + math.floor(ran / run.period_s) * run.period_s
            else:
                kept = total if self.world.checkpoint_cost_s <= 0 else 0.0
            run.lost_s += total - kept
            run.done_s = kept
            run.started = None
            run.epoch += 1
            run.interruptions += 1
        self._unbind(run, t)
        self._choose_capacity(run, t)
        self.state = replace(self.state, pending=self.state.pending + run.pods)
        self.waiting.add(run.index)

    # --- the deadline-aware spot policy (World.spot_deadline) ----------------------------

    def _spot_hazard(self) -> float:
        return max((m.node_hazard_per_hour for m in self.markets.values()), default=0.0)

    def _outlook(self, run: JobRun) -> SpotOutlook:
        hazard = self._spot_hazard()
        workers = len(run.pods)
        return SpotOutlook(
            workers=workers,
            hazard_per_node_hour=hazard,
            interval_s=self.world.tau_s(workers, hazard),
            write_s=self.world.checkpoint_cost_s,
            restart_s=self.world.provisioning_delay_s,
            on_demand_interval_s=self.world.tau_s(workers, 0.0),
        )

    def _progress(self, run: JobRun, t: float) -> dict[str, float]:
        budget = self.world.spot_deadline or 0.0
        runtime = run.job.runtime_s
        return {
            "elapsed_s": t - run.job.submit_s,
            "remaining_s": runtime - run.done_s / run.factor,
            "bound_s": runtime * (1.0 + budget),
        }

    def _choose_capacity(self, run: JobRun, t: float) -> None:
        """Before a job's pods (re)enter the queue: spot or on-demand, as
        `decisions.spot_deadline.spot_is_safe` says for its progress so far."""
        if self.world.spot_deadline is None or self.policy.spot == "Never" or not self.markets:
            return
        spot = spot_is_safe(outlook=self._outlook(run), **self._progress(run, t))
        policy: SpotPolicy = self.policy.spot if spot else "Never"
        if run.pods and run.pods[0].spot != policy:
            run.pods = tuple(replace(pod, spot=policy) for pod in run.pods)

    def _schedule_switch(self, run: JobRun, t: float, nodes: list[str]) -> None:
        """A job starting on spot: when it must move to on-demand if nothing preempts it."""
        if not any(self.meta[n].spot for n in nodes):
            return
        until = spot_until_s(outlook=self._outlook(run), **self._progress(run, t))
        if t + until < t + run.wall_work_s - run.done_s:
            self._push(t + until, "switch", (run.index, run.epoch))

    def _on_switch(self, t: float, data: object) -> None:
        """The job's slack is spent: it writes a checkpoint (C seconds) and goes to on-demand."""
        assert isinstance(data, tuple)
        index, epoch = data
        run = self.jobs[index]
        if run.epoch != epoch or run.finished is not None or run.started is None:
            return
        total = run.done_s + (t - run.started)
        run.done_s = max(run.done_s, total - self.world.checkpoint_cost_s)
        run.started = None
        run.epoch += 1
        run.switches += 1
        self._unbind(run, t)
        run.pods = tuple(replace(pod, spot="Never") for pod in run.pods)
        self.state = replace(self.state, pending=self.state.pending + run.pods)
        self.waiting.add(run.index)

    def _set_cadence(self, run: JobRun, nodes: list[str]) -> None:
        """The job starts on `nodes`: checkpoint at the cadence of their pools' hazard (the
        operator's estimate per pool), keeping the useful work done."""
        hazard = max(
            (self.markets[m.pool].node_hazard_per_hour if m.spot else 0.0)
            for m in (self.meta[n] for n in nodes)
        )
        tau = self.world.tau_s(len(run.pods), hazard)
        cost = self.world.checkpoint_cost_s
        period, factor = math.inf, 1.0
        if math.isfinite(tau) and tau > 0:
            period, factor = tau + cost, 1.0 + cost / tau
        useful = run.done_s / run.factor
        run.period_s, run.factor = period, factor
        run.done_s = useful * factor
        run.wall_work_s = run.job.runtime_s * factor

    def _unbind(self, run: JobRun, t: float) -> None:
        keys = set(_keys(run.pods))
        nodes: list[Node] = []
        for node in self.state.nodes:
            if any(p.key in keys for p in node.pods):
                pods = tuple(p for p in node.pods if p.key not in keys)
                busy = any(not p.daemon for p in pods)
                node = replace(
                    node, pods=pods, empty_since=node.empty_since if busy else self._at(t)
                )
            nodes.append(node)
        self.state = replace(self.state, nodes=tuple(nodes))
        for key in keys:
            self.where.pop(key, None)

    def _on_finish(self, t: float, data: object) -> None:
        assert isinstance(data, tuple)
        index, epoch = data
        run = self.jobs[index]
        if run.epoch != epoch or run.finished is not None:
            return
        run.done_s = run.wall_work_s
        run.started = None
        run.finished = t
        self.unfinished -= 1
        self._unbind(run, t)

    def _on_wake(self, t: float, data: object) -> None:
        self.wakes.discard(t)

    # --- planning ------------------------------------------------------------------------

    @staticmethod
    def _at(t: float) -> datetime:
        return EPOCH + timedelta(seconds=t)

    def _name(self, new: NewNode) -> str:
        return f"{new.pool}-{next(self.names)}"

    def _plan(self, t: float) -> Plan:
        """A plan whose every launch the providers grant. As the capacity controller does: a
        pool that refuses gets `refused_offering(now)` and the cluster is planned again (each
        refusal takes one pool out until its TTL runs out, so this ends)."""
        now = self._at(t)
        if self.state.offerings:
            self.state = replace(self.state, offerings=expire_offerings(self.state.offerings, now))
        for _ in range(len(self.pools) + 1):
            plan = plan_capacity(self.state, now)
            self.plans += 1
            refused: list[str] = []
            for pool, count in sorted(plan.add.items()):
                try:
                    self.launches.scale_up(pool, count, t)
                except InsufficientCapacity:
                    refused.append(pool)
                    self.pool_stats[pool].refusals += 1
                    self.pool_stats[pool].refused_nodes += count
            if not refused:
                return plan
            ttl = timedelta(seconds=self.world.offering_ttl_s)
            offerings = dict(self.state.offerings)
            for pool in refused:
                offerings[pool] = refused_offering(now, ttl)
            self.state = replace(self.state, offerings=offerings)
            self._push(t + self.world.offering_ttl_s, "wake")
        raise RuntimeError(f"the planner kept adding nodes to refused pools at t={t}")

    def _step(self, t: float) -> None:
        now = self._at(t)
        plan = self._whole_gangs(self._plan(t))
        if not plan.empty or plan.placements or plan.moves:
            before = set(self.meta)
            self.state = apply_plan(self.state, plan, now, name_new_node=self._name)
            for name in plan.remove:
                self._close(name, t)
            for node in self.state.nodes:
                if node.name in before or node.pool is None:
                    continue
                pool = self.pools[node.pool]
                self.pool_stats[pool.name].launched += 1
                self.meta[node.name] = NodeMeta(
                    t,
                    pool.price_per_hour,
                    pool.gpus_per_node,
                    pool.capacity_type == c.CAPACITY_SPOT,
                    pool.name,
                )
                if self.warm_start:
                    self._on_ready(t, node.name)
                else:
                    self._push(t + self.world.provisioning_delay_s, "ready", node.name)
            self.where = {p.key: n.name for n in self.state.nodes for p in n.pods}
        self._start_jobs(t)
        self._schedule_wake(t)
        cost = self.cost_closed + sum(
            m.price_per_hour * (t - m.created) / 3600 for m in self.meta.values()
        )
        self.samples.append(
            Sample(t, sum(m.gpus for m in self.meta.values()), self._allocated_gpus(), cost)
        )

    def _whole_gangs(self, plan: Plan) -> Plan:
        """Drop placements of jobs the plan places only in part: their pods stay pending."""
        if not plan.placements:
            return plan
        pending = {pod.key for pod in self.state.pending}
        partial = {
            key
            for key in plan.placements
            if any(k in pending and k not in plan.placements for k in _keys(self.owner[key].pods))
        }
        if not partial:
            return plan
        placements = {k: v for k, v in plan.placements.items() if k not in partial}
        return replace(plan, placements=placements)

    def _start_jobs(self, t: float) -> None:
        started: list[int] = []
        for index in self.waiting:
            run = self.jobs[index]
            nodes = [self.where.get(key) for key in _keys(run.pods)]
            if all(n is not None and self.meta[n].ready for n in nodes):
                if self.world.spot_deadline is not None and self.markets:
                    placed = [n for n in nodes if n is not None]
                    self._set_cadence(run, placed)
                    self._schedule_switch(run, t, placed)
                run.started = t
                self._push(t + run.wall_work_s - run.done_s, "finish", (index, run.epoch))
                started.append(index)
        self.waiting.difference_update(started)

    def _schedule_wake(self, t: float) -> None:
        deadline = math.inf
        for node in self.state.nodes:
            if node.pool is None or any(not p.daemon for p in node.pods):
                continue
            since = node.empty_since or node.created
            due = (since - EPOCH).total_seconds() + self.pools[
                node.pool
            ].scale_down_after.total_seconds()
            if t < due < deadline:
                deadline = due
        if math.isfinite(deadline) and deadline not in self.wakes:
            self.wakes.add(deadline)
            self._push(deadline, "wake")


def _keys(pods: Iterable[Pod]) -> list[PodKey]:
    return [pod.key for pod in pods]


def simulate(jobs: list[Job], policy: Policy, world: World) -> Outcome:
    return Simulation(jobs, policy, world).run()
