"""The composition root: the one place the operator is put together and started.

    sparsam run [--kubeconfig PATH] [--capacity-interval 10s] [--liveness http://0.0.0.0:8080/healthz]

It makes the API client (`kube.client`), the providers and actuators, the controllers that use
them, and a Kopf registry with every handler module's handlers, and runs Kopf with:

- progress and diff-base annotations under `sparsam.dev/` (not kopf.zalando.org), our
  finalizer name, and `sparsam` as the field manager of what we write;
- standalone mode by default: one replica (the chart's Deployment uses the Recreate
  strategy), so no peering objects are needed; `--peering NAME` joins a ClusterKopfPeering
  instead, and only the replica of the highest `--priority` acts;
- the whole cluster watched (GPUNodePools and Nodes are cluster-scoped);
- the controllers in Kopf's memo, where handlers find them.

Nothing here decides anything; tests build the same parts with fakes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes.client import ApiClient

from sparsam import logs, metrics
from sparsam.api import constants as c
from sparsam.api.gpunodepool import GPUNodePool
from sparsam.config import OperatorConfig
from sparsam.controllers.capacity import CapacityController, CapacitySettings
from sparsam.controllers.checkpoints import CheckpointReader
from sparsam.controllers.costpolicy import CostPolicyController
from sparsam.controllers.serving import ServingConfig, ServingController
from sparsam.controllers.training import TrainingController
from sparsam.decisions.cluster import PlannerSettings
from sparsam.decisions.interruption import InterruptionSignals
from sparsam.decisions.scaling import ScalingSettings
from sparsam.handlers import costpolicy, gpunodepool, indexes, inferenceservice, trainingjob
from sparsam.handlers.diffbase import DIFFED, LeanDiffBaseStorage
from sparsam.handlers.pacing import TokenBucket
from sparsam.handlers.passes import WriteStatus
from sparsam.kube.client import PASS_THREADS, api_client
from sparsam.kube.drain import NodeDrainer
from sparsam.kube.inferenceservice import ServerSettings
from sparsam.kube.peering import PeeringGate, own_identity, require_peering
from sparsam.kube.podcache import PodCache, PodViews
from sparsam.kube.pods import Placement
from sparsam.kube.serving import ServingActuator
from sparsam.kube.status import StatusWriter
from sparsam.kube.workers import WorkerActuator
from sparsam.providers.clusterapi import ClusterAPINodePoolProvider
from sparsam.providers.kwok import KwokNodePoolProvider
from sparsam.providers.metrics import PrometheusMetrics, Query, ServingQueries
from sparsam.providers.nodepool import NodePoolProvider


@dataclass
class Operator:
    """Kopf's memo: what handlers reach for."""

    capacity: CapacityController
    training: TrainingController
    costpolicy: CostPolicyController
    serving: ServingController
    #: Every pod, as the passes read them (`kube.podcache`).
    pods: PodViews
    #: What InferenceService and CostPolicy passes write their status with.
    serving_status: WriteStatus
    policy_status: WriteStatus


def _now() -> datetime:
    """The operator's one clock; tests of the passes give theirs explicitly."""
    return datetime.now(UTC)


def build(config: OperatorConfig, api: ApiClient, pods: PodViews) -> Operator:
    """The controllers, wired to real providers and actuators, and the pods they read."""
    kwok = KwokNodePoolProvider(api)
    cluster_api = ClusterAPINodePoolProvider(api)

    def provider_for(pool: GPUNodePool) -> NodePoolProvider:
        return kwok if pool.spec.provider.kwok is not None else cluster_api

    signals = InterruptionSignals(
        frozenset(config.interruption_taints), frozenset(config.interruption_conditions)
    )
    settings = CapacitySettings(
        offering_ttl=config.offering_ttl,
        signals=signals,
        planner=PlannerSettings(spot_pool_max_share=config.spot_pool_max_share),
    )
    prometheus = PrometheusMetrics(config.prometheus_url) if config.prometheus_url else None
    checkpoints = (
        CheckpointReader(prometheus, config.training_interval.total_seconds())
        if prometheus is not None
        else None
    )
    return Operator(
        capacity=CapacityController(provider_for, NodeDrainer(api), settings),
        training=TrainingController(
            WorkerActuator(api), Placement(), signals, config.prices, checkpoints
        ),
        costpolicy=CostPolicyController(),
        serving=ServingController(
            ServingActuator(api), prometheus, serving_config(config), config.prices
        ),
        pods=pods,
        serving_status=StatusWriter(api, c.INFERENCE_SERVICE),
        policy_status=StatusWriter(api, c.COST_POLICY),
    )


def serving_config(config: OperatorConfig) -> ServingConfig:
    """The InferenceService pass's settings; a query flag replaces its default."""
    defaults = ServingQueries()

    def query(flag: str | None, default: Query) -> Query:
        return Query(flag) if flag else default

    queries = ServingQueries(
        rps=query(config.rps_query, defaults.rps),
        concurrency=query(config.concurrency_query, defaults.concurrency),
        last_request=query(config.last_request_query, defaults.last_request),
    )
    return ServingConfig(
        activator_url=config.activator_url,
        queries=queries,
        server=ServerSettings(image=config.server_image),
        # The activator's last-request gauge is exact for its own request counter only.
        scaling=ScalingSettings(
            exact_last_request=(queries.rps, queries.last_request)
            == (defaults.rps, defaults.last_request)
        ),
    )


def registry(
    config: OperatorConfig, active: Callable[[], bool] = lambda: True
) -> kopf.OperatorRegistry:
    """Every handler, in a registry of its own (never Kopf's global one). `active`: whether
    the peering lets this replica act (for the passes from work queues, which Kopf does not
    pause)."""
    reg = kopf.OperatorRegistry()
    indexes.register(reg)
    gpunodepool.register(reg, interval=config.capacity_interval.total_seconds(), now=_now)
    rate = config.status_writes_per_second  # each kind its own bucket
    jobs = trainingjob.register(
        reg,
        interval=config.training_interval.total_seconds(),
        now=_now,
        active=active,
        reports=TokenBucket(rate),
    )
    services = inferenceservice.register(
        reg,
        interval=config.serving_interval.total_seconds(),
        now=_now,
        active=active,
        reports=TokenBucket(rate),
    )
    costpolicy.register(
        reg,
        interval=config.policy_interval.total_seconds(),
        now=_now,
        active=active,
        reports=TokenBucket(rate),
        spenders=lambda: [*jobs.bodies(), *services.bodies()],
    )

    @kopf.on.login(registry=reg)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(api_client(config.kubeconfig))

    return reg


def connection_info(api: ApiClient) -> kopf.ConnectionInfo:
    """Kopf's credentials from the same configuration our API client uses, so the operator
    and its clients always talk to the same cluster as the same identity."""
    conf = api.configuration
    token = (conf.api_key or {}).get("authorization") or (conf.api_key or {}).get("BearerToken")
    scheme = None
    if token and " " in token:
        scheme, token = token.split(" ", 1)
    return kopf.ConnectionInfo(
        server=conf.host,
        ca_path=conf.ssl_ca_cert,
        insecure=not conf.verify_ssl,
        scheme=scheme or ("Bearer" if token else None),
        token=token,
        certificate_path=conf.cert_file,
        private_key_path=conf.key_file,
    )


def settings() -> kopf.OperatorSettings:
    """Kopf's settings as docs/architecture.md ("Kopf's settings") describes them."""
    s = kopf.OperatorSettings()
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.ANNOTATION_PREFIX)
    s.persistence.diffbase_storage = LeanDiffBaseStorage(
        diffed=DIFFED, prefix=c.ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    s.persistence.finalizer = c.FINALIZER
    # Events and status are written by us; Kopf's own per-handler events are noise to users.
    s.posting.level = logging.WARNING
    # Watches are re-opened now and then, so a silently dead connection does not stall us.
    s.watching.server_timeout = 300
    s.watching.client_timeout = 330
    s.networking.request_timeout = 60
    # A deleted GPUNodePool keeps its finalizer until its timer has exited. A timer caught in
    # a pass (a thread call, which cannot be cancelled) is asked again only after this many
    # seconds: Kopf's 60 s made a pool's deletion take a minute longer than its drain.
    s.background.cancellation_polling = 1.0
    return s


def run(config: OperatorConfig) -> None:
    """Run the operator until it is stopped (SIGTERM/SIGINT)."""
    logs.configure(config.log_format)
    api = api_client(config.kubeconfig)
    gate: PeeringGate | None = None
    if config.peering is not None:
        require_peering(api, config.peering)
        gate = PeeringGate(api, config.peering, own_identity(), config.priority)
    if config.metrics_port is not None:
        metrics.serve(config.metrics_port)
    pods = PodCache.connect(api)
    asyncio.run(
        _with_threads(
            gate,
            pods,
            kopf.operator(
                registry=registry(config, gate or (lambda: True)),
                settings=settings(),
                memo=build(config, api, pods.views),
                clusterwide=not config.namespaces,
                namespaces=config.namespaces,
                # A peering name makes peering mandatory: no CRD or object, no start.
                standalone=config.peering is None,
                peering_name=config.peering,
                priority=config.priority,
                # Kopf's type for it is internal; a str at run time.
                identity=cast(Any, gate.identity) if gate is not None else None,
                liveness_endpoint=config.liveness,
            ),
        )
    )


async def _with_threads(
    gate: PeeringGate | None, pods: PodCache, operator: Coroutine[Any, Any, None]
) -> None:
    """Run `operator` once every pod is listed, with PASS_THREADS threads for the passes'
    blocking calls (`asyncio.to_thread`), the pod watch, and the peering gate's reads. The
    default pool (CPU count + 4 threads) lets only 6 passes talk to the apiserver at once on 2
    cores, so a burst of new TrainingJobs would wait in line for their pods."""
    pool = ThreadPoolExecutor(PASS_THREADS, thread_name_prefix="sparsam-pass")
    asyncio.get_running_loop().set_default_executor(pool)
    pods.start()
    watching = asyncio.create_task(gate.watch()) if gate is not None else None
    try:
        while not pods.synced.is_set():
            await asyncio.sleep(0.1)
        await operator
    finally:
        pods.stop()
        if watching is not None:
            watching.cancel()
