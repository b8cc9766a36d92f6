"""One pass of the InferenceService controller on a fake actuator and fake metrics: what it
observes (Prometheus, the Deployments, the replicas' readiness), the Deployments and Service
it applies for a plan, and what it remembers. What the plan is: test_serving_plan.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sparsam.api.costpolicy import CostPolicy
from sparsam.api.inferenceservice import InferenceService
from sparsam.controllers.serving import NO_PROMETHEUS, ServingConfig, ServingController
from sparsam.decisions.cost import PriceTable
from sparsam.providers.fake import FakeMetrics
from sparsam.providers.metrics import ServingQueries

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RPS = ServingQueries().rps.render("web", "clf")
LAST = ServingQueries().last_request.render("web", "clf")


@dataclass
class FakeActuator:
    applied: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def apply(self, manifest: dict[str, Any]) -> None:
        self.applied.append(manifest)

    def delete_deployment(self, namespace: str, name: str, uid: str) -> None:
        self.deleted.append(name)

    def replicas(self) -> dict[str, int]:
        return {
            m["metadata"]["name"]: m["spec"]["replicas"]
            for m in self.applied
            if m["kind"] == "Deployment"
        }


def service(
    status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None, **spec: Any
) -> InferenceService:
    return InferenceService.from_body(
        {
            "metadata": {
                "name": "clf",
                "namespace": "web",
                "uid": "svc-uid",
                "generation": 2,
                "annotations": annotations or {},
            },
            "spec": {
                "model": {"uri": "pvc://models/clf"},
                "replicas": {"min": 0, "max": 4},
                "scaling": {"target": 10, "scaleToZeroAfter": "5m", "scaleDownDelay": "1m"},
                **spec,
            },
            "status": status or {},
        }
    )


def deployment(name: str, replicas: int, ready: int, digest: str = "x") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"{name}-uid",
            "annotations": {"sparsam.dev/applied": digest},
        },
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready},
    }


def replica(name: str, node: str = "n1", ready_at: datetime | None = None) -> dict[str, Any]:
    conditions = (
        [{"type": "Ready", "status": "True", "lastTransitionTime": ready_at.isoformat()}]
        if ready_at
        else []
    )
    return {
        "metadata": {"name": name, "uid": f"{name}-uid"},
        "spec": {"nodeName": node},
        "status": {
            "phase": "Running",
            "startTime": "2026-11-22T11:00:00Z",
            "conditions": conditions,
        },
    }


def controller(
    rps: float | None = 0.0, config: ServingConfig | None = None, **kwargs: Any
) -> tuple[ServingController, FakeActuator, FakeMetrics]:
    actuator, metrics = FakeActuator(), FakeMetrics()
    metrics.values[RPS] = rps
    return ServingController(actuator, metrics, config, **kwargs), actuator, metrics


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def run(
    ctl: ServingController,
    svc: InferenceService,
    deployments: list[dict[str, Any]] | None = None,
    pods: list[dict[str, Any]] | None = None,
    now: datetime = NOW,
    wake_at: datetime | None = None,
    **kwargs: Any,
) -> Any:
    return ctl.reconcile(svc, wake_at, deployments or [], pods or [], {}, {}, None, now, **kwargs)


@pytest.mark.parametrize(
    ("rps", "spec", "expected"),
    [
        pytest.param(25.0, {}, {"clf": 3, "clf-on-demand": 0}, id="prefer-spot-all-on-main"),
        pytest.param(
            25.0, {"capacity": {"onDemandBase": 1}}, {"clf": 2, "clf-on-demand": 1}, id="base-1"
        ),
        pytest.param(
            25.0, {"capacity": {"spot": "Never", "onDemandBase": 1}}, {"clf": 3}, id="never-one"
        ),
        pytest.param(500.0, {}, {"clf": 4, "clf-on-demand": 0}, id="capped-at-max"),
    ],
)
def test_traffic_sets_the_replicas_of_each_track(
    rps: float, spec: dict[str, Any], expected: dict[str, int]
) -> None:
    ctl, act, _ = controller(rps)
    result = run(ctl, service(**spec), [deployment("clf", 1, 1)])
    assert act.replicas() == expected
    assert result.status["replicas"] == sum(expected.values())
    assert result.status["phase"] == "Active"
    assert [e.reason for e in result.events] == ["ScaledUp"]


def test_a_new_idle_service_with_min_zero_starts_at_zero_with_its_service() -> None:
    ctl, act, _ = controller(0.0)
    result = run(ctl, service())
    kinds = [m["kind"] for m in act.applied]
    assert kinds.count("Service") == 1 and act.replicas() == {"clf": 0, "clf-on-demand": 0}
    assert result.status["phase"] == "ScaledToZero"
    assert result.status["url"] == "http://clf.web.svc.cluster.local"
    assert condition(result.status, "Ready")["status"] == "True"
    assert condition(result.status, "MetricsAvailable")["status"] == "True"


def test_the_url_is_the_activators_route_when_there_is_one() -> None:
    ctl, _, _ = controller(config=ServingConfig(activator_url="http://act.sys.svc/"))
    assert run(ctl, service()).status["url"] == "http://act.sys.svc/web/clf"


def test_an_unchanged_deployment_is_not_applied_again() -> None:
    ctl, act, _ = controller(5.0)
    run(ctl, service(capacity={"spot": "Never"}), [deployment("clf", 0, 0)])
    digest = act.applied[-1]["metadata"]["annotations"]["sparsam.dev/applied"]
    act.applied.clear()
    run(ctl, service(capacity={"spot": "Never"}), [deployment("clf", 1, 1, digest)])
    assert act.applied == []


def test_a_track_the_spot_policy_no_longer_has_is_deleted() -> None:
    ctl, act, _ = controller(5.0)
    run(
        ctl,
        service(capacity={"spot": "Never"}),
        [deployment("clf", 1, 1), deployment("clf-on-demand", 0, 0)],
    )
    assert act.deleted == ["clf-on-demand"]


@pytest.mark.parametrize(
    ("down", "no_source"),
    [
        pytest.param(True, False, id="prometheus-down"),
        pytest.param(False, True, id="no-prometheus"),
    ],
)
def test_missing_metrics_hold_the_replicas_and_say_why(down: bool, no_source: bool) -> None:
    ctl, act, metrics = controller(0.0)
    metrics.down = down
    if no_source:
        ctl = ServingController(act, None)
    svc = service()
    # Long idle, two replicas running: with metrics this would scale to zero.
    result = run(ctl, svc, [deployment("clf", 2, 2)], now=NOW + timedelta(hours=1))
    assert result.status["replicas"] == 2 and result.events == ()
    available = condition(result.status, "MetricsAvailable")
    assert available["status"] == "False" and available["reason"] == "MetricsUnavailable"
    assert (NO_PROMETHEUS if no_source else "unreachable") in available["message"]
    assert condition(result.status, "Ready")["reason"] == "MetricsUnavailable"


def test_a_recent_request_seen_in_prometheus_keeps_a_replica() -> None:
    ctl, _, metrics = controller(0.0)
    svc = service()
    run(ctl, svc, [deployment("clf", 1, 1)], now=NOW)
    later = NOW + timedelta(minutes=5)
    metrics.values[LAST] = (later - timedelta(seconds=30)).timestamp()
    result = run(ctl, svc, [deployment("clf", 1, 1)], now=later)
    assert result.status["replicas"] == 1
    assert result.status["lastRequestTime"] == "2026-11-22T12:04:30Z"


def test_a_wake_request_scales_up_once_and_the_cold_start_is_reported() -> None:
    ctl, act, _ = controller(0.0)
    woke = NOW - timedelta(seconds=1)
    svc = service()
    assert ctl.wake_pending(svc.metadata.uid, woke)
    result = run(ctl, svc, [deployment("clf", 0, 0)], wake_at=woke)
    assert act.replicas()["clf"] == 1 and result.status["phase"] == "Waking"
    assert condition(result.status, "Ready")["status"] == "False"
    assert not ctl.wake_pending(svc.metadata.uid, woke)

    ready_at = woke + timedelta(seconds=12.5)
    later = run(
        ctl,
        svc,
        [deployment("clf", 1, 1)],
        [replica("clf-a", ready_at=ready_at)],
        now=NOW + timedelta(seconds=15),
        wake_at=woke,
    )
    assert later.status["phase"] == "Active"
    assert later.status["lastColdStartSeconds"] == 12.5
    assert [e.reason for e in later.events] == ["Woke"]


def test_an_unservable_format_is_degraded_and_creates_nothing() -> None:
    ctl, act, _ = controller(1.0)
    result = run(ctl, service(model={"uri": "pvc://models/clf", "format": "onnx"}))
    assert act.applied == [] and result.status["phase"] == "Degraded"
    ready = condition(result.status, "Ready")
    assert ready["reason"] == "UnsupportedModelFormat" and "spec.image" in ready["message"]


def test_running_replicas_accrue_cost_at_their_pools_price() -> None:
    ctl, _, _ = controller(5.0, prices=PriceTable({("*", "on-demand"): 3.6}))
    svc = service(capacity={"spot": "Never"})
    pods = [replica("clf-a")]
    run(ctl, svc, [deployment("clf", 1, 1)], pods, now=NOW)
    result = run(ctl, svc, [deployment("clf", 1, 1)], pods, now=NOW + timedelta(seconds=100))
    assert result.status["cost"]["gpuSeconds"] == pytest.approx(100.0)
    assert result.status["cost"]["accrued"] == pytest.approx(0.1)


def idle_policy(**spec: Any) -> CostPolicy:
    return CostPolicy.from_body(
        {"metadata": {"name": "team-web"}, "spec": {"namespaceSelector": {}, **spec}}
    )


def test_an_unset_spot_takes_the_policys_default() -> None:
    ctl, act, _ = controller(20.0)
    policy = idle_policy(spot={"default": "Never"})
    result = ctl.reconcile(service(), None, [], [], {}, {}, policy, NOW)
    # Never has one track, on on-demand nodes only.
    (deployment_,) = [m for m in act.applied if m["kind"] == "Deployment"]
    labels = deployment_["spec"]["template"]["metadata"]["labels"]
    assert labels["sparsam.dev/spot"] == "Never"
    assert result.status["spot"] == {
        "policy": "Never",
        "source": "CostPolicy",
        "message": "spot: Never (from CostPolicy team-web spot.default)",
    }
    # The service's own wins.
    ctl, act, _ = controller(20.0)
    mine = service(capacity={"spot": "Require"})
    result = ctl.reconcile(mine, None, [], [], {}, {}, policy, NOW)
    assert result.status["spot"]["policy"] == "Require"
    assert result.status["spot"]["source"] == "Spec"
    # No policy: Prefer, the operator's default (two tracks).
    ctl, act, _ = controller(20.0)
    result = run(ctl, service())
    assert result.status["spot"]["source"] == "Default"
    assert len([m for m in act.applied if m["kind"] == "Deployment"]) == 2
