"""A CostPolicy's spot.default and scaleToZero.after end to end on the dev cluster.

- spot.default: a TrainingJob that sets no spec.capacity.spot (the CRD no longer defaults it)
  gets the governing policy's Never: its worker is placed on an on-demand node although a spot
  pool is there, and status.spot names the policy; one that sets Prefer keeps its own.
- scaleToZero.after: an InferenceService whose own scaleToZeroAfter is 5m goes back to zero
  after the policy's 10s once woken, and status.scaleToZeroAfter says the policy capped it.

The operator reads the traffic from a real Prometheus (Debian's), asked `vector(0)`: a service
that is idle by every measure, so that only the idle time decides when it scales to zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.conftest import Cluster, Kubectl
from tests.operator_process import (
    Operator,
    apply,
    eventually,
    get,
    object_events,
    pool,
    running_pods,
    trainingjob,
)

from sparsam.demo.prometheus import running_prometheus

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """`sparsam run` reading an always-idle rate from a real Prometheus (no scrape targets)."""
    directory = tmp_path_factory.mktemp("policy-defaults")
    with running_prometheus([], directory / "prometheus") as prometheus:
        op = Operator(
            cluster.kubeconfig,
            directory / "operator.log",
            f"--prometheus-url={prometheus.url}",
            "--rps-query=vector(0)",
        )
        op.start()
        try:
            yield op
        finally:
            op.stop()


def policy(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sparsam.dev/v1alpha1",
        "kind": "CostPolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "priority": 1000,
            **spec,
        },
    }


def test_an_unset_spot_takes_the_policys_default(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
) -> None:
    apply(
        kubectl,
        pool(cluster_scoped_name("gpunodepool", "spot"), gpu_type, "spot"),
        pool(cluster_scoped_name("gpunodepool", "od"), gpu_type, "on-demand"),
    )
    name = cluster_scoped_name("costpolicy", "never")
    apply(kubectl, policy(name, namespace, spot={"default": "Never"}))
    apply(kubectl, trainingjob("tj", namespace, gpu_type, workers={"min": 1, "max": 1}))
    # Unset stays unset: the apiserver no longer fills in Prefer.
    job = get(kubectl, "trainingjob", "tj", "-n", namespace)
    assert "spot" not in (job["spec"].get("capacity") or {})

    def spot_status(job_name: str) -> dict[str, Any]:
        found = get(kubectl, "trainingjob", job_name, "-n", namespace)
        spot: dict[str, Any] = (found.get("status") or {}).get("spot") or {}
        return spot

    eventually("status.spot", lambda: spot_status("tj"), operator)
    assert spot_status("tj") == {
        "policy": "Never",
        "source": "CostPolicy",
        "message": f"spot: Never (from CostPolicy {name} spot.default)",
    }
    node = eventually(
        "the worker running", lambda: running_pods(kubectl, namespace).get("tj-worker-0"), operator
    )
    labels = get(kubectl, "node", node)["metadata"]["labels"]
    assert labels["karpenter.sh/capacity-type"] == "on-demand", labels
    worker = get(kubectl, "pod", "tj-worker-0", "-n", namespace)
    assert worker["metadata"]["labels"]["sparsam.dev/spot"] == "Never"

    # A job's own spot wins over the policy's.
    mine = trainingjob("mine", namespace, gpu_type, workers={"min": 1, "max": 1})
    mine["spec"]["capacity"] = {"spot": "Prefer"}
    apply(kubectl, mine)
    eventually("status.spot of the job with its own", lambda: spot_status("mine"), operator)
    assert spot_status("mine")["policy"] == "Prefer"
    assert spot_status("mine")["source"] == "Spec"


def test_the_policys_scale_to_zero_after_caps_the_services(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
) -> None:
    name = cluster_scoped_name("costpolicy", "idle")
    apply(kubectl, policy(name, namespace, scaleToZero={"after": "10s"}))
    apply(
        kubectl,
        {
            "apiVersion": "sparsam.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "clf", "namespace": namespace},
            # scaleToZeroAfter is the CRD's default, 5m.
            "spec": {
                "model": {"uri": "pvc://models/clf"},
                "resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"},
                "replicas": {"min": 0, "max": 1},
            },
        },
    )

    def status() -> dict[str, Any]:
        found: dict[str, Any] = get(kubectl, "inferenceservice", "clf", "-n", namespace)
        return found.get("status") or {}

    eventually("ScaledToZero", lambda: status().get("phase") == "ScaledToZero", operator)
    assert status()["scaleToZeroAfter"] == {
        "seconds": 10,
        "source": "CostPolicy",
        "message": f"scaleToZeroAfter: 10s (CostPolicy {name} scaleToZero.after caps"
        " spec.scaling.scaleToZeroAfter 300s)",
    }
    # A wake request, as the activator makes one for a request held at zero.
    woken = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kubectl(
        "annotate",
        "inferenceservice",
        "clf",
        "-n",
        namespace,
        f"sparsam.dev/wake-requested-at={woken}",
    )
    started = time.monotonic()
    eventually("a replica after the wake", lambda: status().get("replicas") == 1, operator)
    eventually(
        "back at zero after the policy's 10s",
        lambda: status().get("replicas") == 0 and status().get("phase") == "ScaledToZero",
        operator,
        timeout=120,
    )
    # Idle for the policy's 10 s, not the service's 5 m.
    assert 9 <= time.monotonic() - started < 120
    assert any("idle for 10s" in e for e in object_events(kubectl, "clf")), object_events(
        kubectl, "clf"
    )
