"""charts/sparsam on the real dev cluster: lint and template, install, an RBAC audit, and the
operator run out of cluster as the chart's ServiceAccount (a TokenRequest token), which proves
that the ClusterRole is enough for every controller: pods on KWOK nodes run no containers, so
the Deployment's pod itself never starts here."""

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
    pool,
    running_pods,
    trainingjob,
)

from sparsam.devcluster.tools import HELM, ensure_binaries

CHART = Path(__file__).resolve().parents[2] / "charts" / "sparsam"


@pytest.fixture(scope="module")
def helm(cluster: Cluster) -> Callable[..., str]:
    binary = ensure_binaries(tools=(HELM,))["helm"]

    def run(*args: str) -> str:
        done = subprocess.run(
            [str(binary), f"--kubeconfig={cluster.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
        return done.stdout

    return run


def rules(helm: Callable[..., str], *sets: str) -> list[dict[str, Any]]:
    args = [f"--set={s}" for s in sets]
    docs = [d for d in yaml.safe_load_all(helm("template", "t", str(CHART), *args)) if d]
    (role,) = [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "t-sparsam"
    ]
    found: list[dict[str, Any]] = role["rules"]
    return found


def grants(found: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in found
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_lint_and_template_grant_only_what_enabled_providers_need(
    helm: Callable[..., str],
) -> None:
    helm("lint", "--strict", str(CHART))
    plain = rules(helm)
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in plain)
    assert not any("secrets" in r["resources"] for r in plain)
    assert grants(plain, "", "nodes") == {"get", "list", "watch", "patch"}
    assert grants(plain, "cluster.x-k8s.io", "machinedeployments/scale") == set()
    kwok = rules(helm, "providers.kwok.enabled=true")
    assert grants(kwok, "", "nodes") == {"get", "list", "watch", "patch", "create", "delete"}
    capi = rules(helm, "providers.clusterAPI.enabled=true")
    assert grants(capi, "cluster.x-k8s.io", "machinedeployments/scale") == {
        "get",
        "update",
        "patch",
    }
    queried = helm(
        "template",
        "t",
        str(CHART),
        "--set=prometheus.url=http://prom:9090",
        '--set=prometheus.queries.rps=sum(rate(x{a="{name}"}[1m]))',
    )
    args = next(
        d
        for d in yaml.safe_load_all(queried)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "t-sparsam"
    )["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--prometheus-url=http://prom:9090" in args
    assert "--status-writes-per-second=20" in args
    assert '--rps-query=sum(rate(x{a="{name}"}[1m]))' in args
    assert "--activator-url=http://t-sparsam-activator.default.svc.cluster.local" in args
    pinned = helm("template", "t", str(CHART), "--set=image.digest=sha256:" + "a" * 64)
    assert "sparsam-operator@sha256:" + "a" * 64 in pinned


@pytest.fixture
def release(
    helm: Callable[..., str], kubectl: Kubectl, namespace: str
) -> Iterator[tuple[str, str]]:
    """The chart installed in the test's namespace, with the kwok provider; (namespace, service
    account). Uninstalled afterwards."""
    name = f"sp-{namespace[-6:]}"
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    helm("install", name, str(CHART), "-n", namespace, "--set=providers.kwok.enabled=true")
    try:
        yield namespace, f"{name}-sparsam"
    finally:
        helm("uninstall", name, "-n", namespace)


ALLOWED = [
    ("watch", "pods"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods/eviction"),
    ("patch", "nodes"),
    ("create", "nodes"),
    ("list", "namespaces"),
    ("patch", "services"),
    ("create", "events"),
    ("patch", "trainingjobs.sparsam.dev/status"),
    ("patch", "gpunodepools.sparsam.dev"),
    ("delete", "trainingjobs.sparsam.dev"),
    ("patch", "deployments.apps"),
    ("patch", "inferenceservices.sparsam.dev/status"),
]
DENIED = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods/exec"),
    ("update", "nodes"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts/token"),
    ("impersonate", "users"),
    ("update", "trainingjobs.sparsam.dev"),
    ("delete", "costpolicies.sparsam.dev"),
    ("patch", "deployments.apps/scale"),
    ("create", "daemonsets.apps"),
    ("delete", "namespaces"),
]

ACTIVATOR = [
    ("watch", "pods", "yes"),
    ("patch", "inferenceservices.sparsam.dev", "yes"),
    ("list", "inferenceservices.sparsam.dev", "yes"),
    ("delete", "pods", "no"),
    ("create", "pods", "no"),
    ("get", "secrets", "no"),
    ("patch", "deployments.apps", "no"),
    ("patch", "inferenceservices.sparsam.dev/status", "no"),
    ("patch", "trainingjobs.sparsam.dev", "no"),
]


def test_peering_is_rendered_only_when_enabled(helm: Callable[..., str]) -> None:
    def render(*sets: str) -> list[dict[str, Any]]:
        args = [f"--set={s}" for s in sets]
        return [d for d in yaml.safe_load_all(helm("template", "t", str(CHART), *args)) if d]

    def operator_args(docs: list[dict[str, Any]]) -> list[str]:
        (deployment,) = [
            d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-sparsam"
        ]
        found: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return found

    plain = render()
    assert grants(rules(helm), "kopf.dev", "clusterkopfpeerings") == set()
    assert not [d for d in plain if d["kind"] == "ClusterKopfPeering"]
    assert not [a for a in operator_args(plain) if a.startswith(("--peering", "--priority"))]

    sets = (
        "operator.peering.enabled=true",
        "operator.peering.name=ops",
        "operator.peering.priority=5",
    )
    peered = render(*sets)
    (peering,) = [d for d in peered if d["kind"] == "ClusterKopfPeering"]
    assert peering["metadata"]["name"] == "ops"
    assert {"--peering=ops", "--priority=5"} <= set(operator_args(peered))
    found = rules(helm, *sets)
    assert grants(found, "kopf.dev", "clusterkopfpeerings") == {"list", "watch", "get", "patch"}
    # Written: only its own peering object.
    (write,) = [r for r in found if "kopf.dev" in r["apiGroups"] and "patch" in r["verbs"]]
    assert write["resourceNames"] == ["ops"]


def test_install_rbac_audit_and_the_operator_running_as_the_service_account(
    kubectl: Kubectl,
    cluster: Cluster,
    release: tuple[str, str],
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
    tmp_path: Path,
) -> None:
    namespace, account = release
    deployment = get(kubectl, "deployment", "-n", namespace, account)
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert get(kubectl, "crd", "trainingjobs.sparsam.dev")["spec"]["group"] == "sparsam.dev"
    # Admitted under Pod Security "restricted" (the namespace enforces it): the ReplicaSet's
    # pod exists. It never runs: KWOK nodes run no containers, and GPU nodes taint it away.
    eventually(
        "the operator's pod admitted",
        lambda: get(kubectl, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")[
            "items"
        ],
        None,
        timeout=30,
    )

    who = f"--as=system:serviceaccount:{namespace}:{account}"
    for verb, resource in ALLOWED + DENIED:
        # `can-i VERB pods/exec` would mean the pod named exec: subresources go apart.
        kind, _, sub = resource.partition("/")
        extra = [f"--subresource={sub}"] if sub else []
        done = kubectl("auth", "can-i", verb, kind, *extra, "-A", who, check=False)
        expected = "yes" if (verb, resource) in ALLOWED else "no"
        assert done.stdout.strip() == expected, f"can-i {verb} {resource}: {done.stdout}"

    # The activator: admitted under "restricted" too, and allowed only what it does.
    eventually(
        "the activator's pod admitted",
        lambda: get(
            kubectl, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=activator"
        )["items"],
        None,
        timeout=30,
    )
    activator = f"--as=system:serviceaccount:{namespace}:{account}-activator"
    for verb, resource, expected in ACTIVATOR:
        kind, _, sub = resource.partition("/")
        extra = [f"--subresource={sub}"] if sub else []
        done = kubectl("auth", "can-i", verb, kind, *extra, "-A", activator, check=False)
        assert done.stdout.strip() == expected, f"activator can-i {verb} {resource}: {done.stdout}"

    token = kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {
                "name": "sa",
                "context": {"cluster": admin["clusters"][0]["name"], "user": account},
            }
        ],
        "current-context": "sa",
    }
    kubeconfig = tmp_path / "service-account.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))

    operator = Operator(kubeconfig, tmp_path / "operator.log")
    operator.start()
    try:
        pool_name = cluster_scoped_name("gpunodepool", "spot")
        apply(kubectl, pool(pool_name, gpu_type, "spot"))
        policy = cluster_scoped_name("costpolicy", "team")
        apply(
            kubectl,
            {
                "apiVersion": "sparsam.dev/v1alpha1",
                "kind": "CostPolicy",
                "metadata": {"name": policy},
                "spec": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        )
        apply(
            kubectl,
            trainingjob("tj", namespace, gpu_type, resources={"gpus": 2, "gpuType": gpu_type}),
        )
        eventually(
            "two workers running on nodes the pool added",
            lambda: len(running_pods(kubectl, namespace)) == 2,
            operator,
        )
        eventually(
            "the job Running",
            lambda: (
                get(kubectl, "trainingjob", "tj", "-n", namespace).get("status", {}).get("phase")
                == "Running"
            ),
            operator,
        )
        apply(
            kubectl,
            {
                "apiVersion": "sparsam.dev/v1alpha1",
                "kind": "InferenceService",
                "metadata": {"name": "clf", "namespace": namespace},
                "spec": {
                    "model": {"uri": "pvc://models/clf"},
                    "resources": {"gpus": 0},
                    "replicas": {"min": 1, "max": 2},
                },
            },
        )
        eventually(
            "the InferenceService's Deployment at its minimum",
            lambda: (
                [
                    d["spec"]["replicas"]
                    for d in get(
                        kubectl,
                        "deployments",
                        "-n",
                        namespace,
                        "-l",
                        "sparsam.dev/inference-service",
                    )["items"]
                ]
                == [1, 0]
            ),
            operator,
        )
        eventually(
            "the policy's status",
            lambda: (
                get(kubectl, "costpolicy", policy).get("status", {}).get("matchedNamespaces")
                == [namespace]
            ),
            operator,
        )
        # Scale down and drain as the service account: evictions, cordons, node deletes.
        kubectl("delete", "trainingjob", "tj", "-n", namespace)
        eventually(
            "the pool drained to zero",
            lambda: not get(kubectl, "nodes", "-l", f"sparsam.dev/pool={pool_name}")["items"],
            operator,
        )
        # Deleted while the operator runs: Kopf's finalizers are released by it.
        kubectl("delete", "gpunodepool", pool_name, "--timeout=60s")
        kubectl("delete", "costpolicy", policy, "--timeout=60s")
    finally:
        operator.stop()
    # RBAC's refusals name the identity ('... is forbidden: User "system:serviceaccount:..."
    # cannot ...'); other 403s (e.g. creating in a namespace another test is deleting) are not
    # about the role.
    refused = [
        line
        for line in (tmp_path / "operator.log").read_text().splitlines()
        if "forbidden: User" in line or f"system:serviceaccount:{namespace}:{account}" in line
    ]
    assert not refused, "\n".join(refused[:20])


@pytest.mark.parametrize("directory", ["platform", "teams/newsroom"])
def test_gitops_examples_pass_the_apiservers_validation(kubectl: Kubectl, directory: str) -> None:
    path = CHART.parents[1] / "examples" / "gitops" / directory
    done = kubectl("apply", "--dry-run=server", "-k", str(path))
    assert "created (server dry run)" in done.stdout or "configured" in done.stdout
