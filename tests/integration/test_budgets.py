"""CostPolicy budgets end to end on the dev cluster: Alert, BlockNew (refused at admission by
the chart's ValidatingAdmissionPolicy) and Suspend (an InferenceService scaled to zero).

Each test gives its namespace a CostPolicy with a tiny monthly budget and lets a workload on a
priced pool spend it (status.cost is written every 30 s, so each takes about a minute)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import Cluster, Kubectl
from tests.operator_process import (
    Operator,
    apply,
    eventually,
    get,
    object_events,
    pool,
    trainingjob,
)

from sparsam.devcluster.tools import HELM, KUBERNETES_VERSION, ensure_binaries

CHART = Path(__file__).resolve().parents[2] / "charts" / "sparsam"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def admission(cluster: Cluster, kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """The chart's admission policy and binding, installed for this test (cluster-wide
    objects, named after the test's namespace) and removed afterwards."""
    helm = ensure_binaries(tools=(HELM,))["helm"]
    release = f"b{namespace[-6:]}"
    rendered = subprocess.run(
        [
            str(helm),
            "template",
            release,
            str(CHART),
            "--show-only=templates/admission.yaml",
            # `helm template` knows no cluster: say that it serves admission policies.
            "--api-versions=admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
            f"--kube-version={KUBERNETES_VERSION}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    kubectl("apply", "-f", "-", input=rendered)
    name = f"{release}-sparsam-budget"
    try:
        yield name
    finally:
        kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
        kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")


def budget_policy(name: str, namespace: str, on_exceeded: str, **budget: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sparsam.dev/v1alpha1",
        "kind": "CostPolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "priority": 1000,
            "budget": {"monthly": 0.0005, "onExceeded": on_exceeded, **budget},
        },
    }


def inference_service(name: str, namespace: str, gpu_type: str, minimum: int) -> dict[str, Any]:
    return {
        "apiVersion": "sparsam.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "pvc://models/clf"},
            "resources": {"gpus": 1, "gpuType": gpu_type, "cpu": "100m", "memory": "256Mi"},
            "replicas": {"min": minimum, "max": 2},
        },
    }


def policy_status(kubectl: Kubectl, policy: str) -> dict[str, Any]:
    found: dict[str, Any] = get(kubectl, "costpolicy", policy).get("status") or {}
    return found


def is_true(status: dict[str, Any], type_: str) -> bool:
    return any(c["type"] == type_ and c["status"] == "True" for c in status.get("conditions", []))


def test_blocknew_refuses_new_jobs_and_services_at_admission_naming_the_policy(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
    admission: str,
) -> None:
    apply(kubectl, pool(cluster_scoped_name("gpunodepool", "spot"), gpu_type, "spot"))
    policy = cluster_scoped_name("costpolicy", "budget")
    apply(kubectl, budget_policy(policy, namespace, "BlockNew"))
    apply(kubectl, trainingjob("tj", namespace, gpu_type))
    eventually(
        "the namespace blocked",
        lambda: policy_status(kubectl, policy).get("blockedNamespaces") == [namespace],
        operator,
        timeout=150,
    )
    assert is_true(policy_status(kubectl, policy), "BudgetExceeded")

    for late in (
        trainingjob("late", namespace, gpu_type),
        inference_service("late", namespace, gpu_type, 1),
    ):
        refused = kubectl("apply", "-f", "-", input=yaml.safe_dump(late), check=False)
        assert refused.returncode != 0, f"{late['kind']} admitted"
        assert f"CostPolicy {policy} has spent its monthly budget" in refused.stderr, refused.stderr
        assert "onExceeded: BlockNew" in refused.stderr
    # Work already running goes on; an update of it is not a creation.
    assert get(kubectl, "trainingjob", "tj", "-n", namespace)["status"]["phase"] == "Running"
    kubectl("label", "trainingjob", "tj", "-n", namespace, "touched=yes")


def test_alert_only_warns_and_admits(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
    admission: str,
) -> None:
    apply(kubectl, pool(cluster_scoped_name("gpunodepool", "spot"), gpu_type, "spot"))
    policy = cluster_scoped_name("costpolicy", "budget")
    apply(kubectl, budget_policy(policy, namespace, "Alert", alertAt=[0.5]))
    apply(kubectl, trainingjob("tj", namespace, gpu_type))
    eventually(
        "the budget spent",
        lambda: is_true(policy_status(kubectl, policy), "BudgetExceeded"),
        operator,
        timeout=150,
    )
    status = policy_status(kubectl, policy)
    assert is_true(status, "BudgetAlert") and status["blockedNamespaces"] == []
    # No finalizer (its passes run from a work queue): deleting it never waits for us.
    assert "finalizers" not in get(kubectl, "costpolicy", policy)["metadata"]
    reasons = [e.split(":")[0] for e in object_events(kubectl, policy)]
    assert "BudgetAlert" in reasons and "BudgetExceeded" in reasons
    # Admitted, and it runs.
    apply(kubectl, trainingjob("late", namespace, gpu_type))
    eventually(
        "the late job running",
        lambda: (
            get(kubectl, "trainingjob", "late", "-n", namespace).get("status", {}).get("phase")
            == "Running"
        ),
        operator,
    )


def test_suspend_scales_an_inference_service_to_zero(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
    model_claim: str,
) -> None:
    apply(kubectl, pool(cluster_scoped_name("gpunodepool", "spot"), gpu_type, "spot"))
    policy = cluster_scoped_name("costpolicy", "budget")
    apply(kubectl, budget_policy(policy, namespace, "Suspend"))
    # The model-server pods are admitted under Pod Security "restricted" (they must run to
    # spend the budget).
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    # Held at one replica (min 1): its GPU time on the pool's priced node spends the budget.
    apply(kubectl, inference_service("clf", namespace, gpu_type, 1))

    def service() -> dict[str, Any]:
        found: dict[str, Any] = get(kubectl, "inferenceservice", "clf", "-n", namespace)
        return found.get("status") or {}

    eventually("a replica", lambda: service().get("replicas") == 1, operator)
    eventually(
        "the service suspended by the budget",
        lambda: any(
            c["type"] == "Ready" and c["reason"] == "BudgetExceeded"
            for c in service().get("conditions", [])
        ),
        operator,
        timeout=150,
    )
    assert service()["replicas"] == 0
    assert get(kubectl, "deployment", "clf", "-n", namespace)["spec"]["replicas"] == 0
    assert float(service()["cost"]["accrued"]) > 0
