"""charts/sparsam on the real dev cluster: lint and template, install, an RBAC audit, and the
operator run out of cluster as the chart's ServiceAccount (a TokenRequest token), which proves
that the ClusterRole is enough for every controller: pods on KWOK nodes run no containers, so
the Deployment's pod itself never starts here."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

from sparsam.api import constants as c
from sparsam.devcluster.tools import HELM, KUBERNETES_VERSION, ensure_binaries

CHART = Path(__file__).resolve().parents[2] / "charts" / "sparsam"
CRD_CHART = CHART.parent / "sparsam-crds"
#: What `helm template` assumes the cluster serves besides the defaults (at install the
#: cluster's own discovery answers): admission policies.
VAP = "--api-versions=admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"


@pytest.fixture(scope="module")
def helm(cluster: Cluster) -> Callable[..., str]:
    binary = ensure_binaries(tools=(HELM,))["helm"]

    def run(*args: str, refused: bool = False) -> str:
        # A helm built from source assumes Kubernetes 1.20 where no cluster answers.
        version = (
            [f"--kube-version={KUBERNETES_VERSION}"] if args[0] in ("template", "lint") else []
        )
        done = subprocess.run(
            [str(binary), f"--kubeconfig={cluster.kubeconfig}", *args, *version],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if refused:
            assert done.returncode != 0, f"helm {' '.join(args)} was not refused"
            return done.stdout + done.stderr
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


@contextmanager
def installed(
    helm: Callable[..., str], kubectl: Kubectl, namespace: str, *sets: str
) -> Iterator[tuple[str, str]]:
    """The chart installed in `namespace`, which enforces Pod Security "restricted", with the
    kwok provider and `sets`; (namespace, service account). Uninstalled afterwards."""
    name = f"sp-{namespace[-6:]}"
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    args = [f"--set={s}" for s in ("providers.kwok.enabled=true", *sets)]
    helm("install", name, str(CHART), "-n", namespace, *args)
    try:
        yield namespace, f"{name}-sparsam"
    finally:
        helm("uninstall", name, "-n", namespace)


@pytest.fixture
def release(
    helm: Callable[..., str], kubectl: Kubectl, namespace: str
) -> Iterator[tuple[str, str]]:
    """The chart installed in the test's namespace, cluster-wide."""
    with installed(helm, kubectl, namespace) as found:
        yield found


def token_kubeconfig(
    cluster: Cluster, kubectl: Kubectl, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig that is the ServiceAccount `account` (a TokenRequest token)."""
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
    path.write_text(yaml.safe_dump(config))
    return path


def can_i(kubectl: Kubectl, who: str, verb: str, resource: str, *where: str) -> str:
    # `can-i VERB pods/exec` would mean the pod named exec: subresources go apart.
    kind, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    done = kubectl("auth", "can-i", verb, kind, *extra, *where, f"--as={who}", check=False)
    return str(done.stdout.strip())


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

    kubeconfig = token_kubeconfig(
        cluster, kubectl, namespace, account, tmp_path / "service-account.kubeconfig"
    )

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


def render(helm: Callable[..., str], *args: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(helm("template", "t", str(CHART), *args)) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_schema_refuses_bad_values_at_template_and_lint(helm: Callable[..., str]) -> None:
    for bad, says in (
        ("operator.logLevel=verbose", "/operator/logLevel"),
        ("activator.replicas=two", "/activator/replicas"),
        ("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0"),
        ("admissionPolicies=maybe", "/admissionPolicies"),
        ("actvator.enabled=false", "actvator"),
    ):
        refusal = helm("template", "t", str(CHART), f"--set={bad}", refused=True)
        assert "don't meet the specifications of the schema" in refusal and says in refusal, refusal
        assert says in helm("lint", str(CHART), f"--set={bad}", refused=True)
    # Below the CRDs' needs (CEL rules with reason and fieldPath): refused at once.
    old = subprocess.run(
        [
            str(ensure_binaries(tools=(HELM,))["helm"]),
            "template",
            "t",
            str(CHART),
            "--kube-version=1.28.9",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert old.returncode != 0 and "kubeVersion" in old.stderr, old.stderr


def test_names_images_scheduling_and_admission_follow_their_values(
    helm: Callable[..., str],
) -> None:
    plain = render(helm)
    operator = one(plain, "Deployment", "t-sparsam")["spec"]["template"]["spec"]
    assert (
        "--server-image=ghcr.io/sparsam/sparsam-trainer:0.1.0" in operator["containers"][0]["args"]
    )
    # Without admission policies served (below Kubernetes 1.30) none is rendered.
    assert not [d for d in plain if d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert "nodeSelector" not in operator and "priorityClassName" not in operator

    docs = render(
        helm,
        VAP,
        "--set=image.tag=1.2.3",
        "--set=fullnameOverride=gpu-ops",
        "--set=nodeSelector.pool=system",
        "--set=scheduling.activator.nodeSelector.pool=edge",
        "--set=scheduling.activator.priorityClassName=system-cluster-critical",
        "--set=scheduling.operator.tolerations[0].key=dedicated",
        "--set=scheduling.operator.tolerations[0].operator=Exists",
    )
    operator = one(docs, "Deployment", "gpu-ops")["spec"]["template"]["spec"]
    activator = one(docs, "Deployment", "gpu-ops-activator")["spec"]["template"]["spec"]
    assert operator["containers"][0]["image"] == "ghcr.io/sparsam/sparsam-operator:1.2.3"
    assert (
        "--server-image=ghcr.io/sparsam/sparsam-trainer:1.2.3" in operator["containers"][0]["args"]
    )
    assert operator["nodeSelector"] == {"pool": "system"}
    assert operator["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert "priorityClassName" not in operator
    assert activator["nodeSelector"] == {"pool": "edge"}
    assert activator["priorityClassName"] == "system-cluster-critical"
    policies = {d["metadata"]["name"] for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
    assert policies == {"gpu-ops-budget", "gpu-ops-activator-wake-only"}
    wake = one(docs, "ValidatingAdmissionPolicy", "gpu-ops-activator-wake-only")["spec"]
    assert (
        "system:serviceaccount:default:gpu-ops-activator"
        in wake["matchConditions"][0]["expression"]
    )
    assert c.ANNOTATION_WAKE_REQUESTED in wake["variables"][0]["expression"]
    assert not [
        d
        for d in render(helm, VAP, "--set=admissionPolicies=false")
        if d["kind"].startswith("ValidatingAdmissionPolicy")
    ]

    renamed = render(helm, "--set=nameOverride=spx", "--set=image.digest=sha256:" + "b" * 64)
    deployment = one(renamed, "Deployment", "t-spx")
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == "spx"
    # A digest pins the operator; the model server keeps the appVersion's tag.
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--server-image=ghcr.io/sparsam/sparsam-trainer:0.1.0" in args
    explicit = render(helm, "--set=operator.serverImage=registry.local/server@sha256:" + "c" * 64)
    args = one(explicit, "Deployment", "t-sparsam")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--server-image=registry.local/server@sha256:" + "c" * 64 in args


def test_namespace_mode_renders_roles_for_writes_and_a_smaller_cluster_role(
    helm: Callable[..., str],
) -> None:
    docs = render(helm, "--set=watchNamespaces={ml,web}")
    cluster = one(docs, "ClusterRole", "t-sparsam")["rules"]
    assert grants(cluster, "", "pods") == {"get", "list", "watch"}
    for resource in ("pods/eviction", "services", "events"):
        assert grants(cluster, "", resource) == set(), resource
    assert grants(cluster, "apps", "deployments") == set()
    assert grants(cluster, "sparsam.dev", "trainingjobs") == set()
    assert grants(cluster, "sparsam.dev", "gpunodepools") == {"get", "list", "watch", "patch"}
    roles = {
        d["metadata"]["namespace"]: d["rules"]
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "t-sparsam"
    }
    assert set(roles) == {"ml", "web"}
    for found in roles.values():
        assert grants(found, "", "pods") == {"create", "delete"}
        assert grants(found, "apps", "deployments") == {
            "get",
            "list",
            "watch",
            "create",
            "patch",
            "delete",
        }
        assert not any("secrets" in r["resources"] for r in found)
    bindings = {
        (d["metadata"]["namespace"], d["roleRef"]["name"])
        for d in docs
        if d["kind"] == "RoleBinding"
    }
    assert bindings == {("ml", "t-sparsam"), ("web", "t-sparsam"), ("default", "t-sparsam-events")}
    args = one(docs, "Deployment", "t-sparsam")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=ml", "--namespace=web"]
    # Cluster-wide (the default) no Role is rendered and no --namespace is passed.
    plain = render(helm)
    assert not [d for d in plain if d["kind"] in ("Role", "RoleBinding")]


def test_the_crd_chart_renders_the_apis_crds_to_keep_and_both_charts_package(
    helm: Callable[..., str], tmp_path: Path
) -> None:
    helm("lint", "--strict", str(CRD_CHART))
    rendered = [d for d in yaml.safe_load_all(helm("template", "c", str(CRD_CHART))) if d]
    ours = {
        d["metadata"]["name"]: d
        for d in (yaml.safe_load(p.read_text()) for p in (CHART.parents[1] / "crds").glob("*.yaml"))
    }
    assert {d["metadata"]["name"] for d in rendered} == set(ours)
    for crd in rendered:
        name = crd["metadata"]["name"]
        # The same schema, to the byte's meaning (Helm's YAML round trip keeps every value).
        assert crd["spec"] == ours[name]["spec"], name
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    dropped = helm("template", "c", str(CRD_CHART), "--set=keep=false")
    assert "resource-policy" not in dropped
    for chart in (CHART, CRD_CHART):
        helm("package", str(chart), f"--destination={tmp_path}")
    assert sorted(p.name for p in tmp_path.glob("*.tgz")) == [
        "sparsam-0.1.0.tgz",
        "sparsam-crds-0.1.0.tgz",
    ]


def test_the_activators_token_sets_its_wake_annotation_and_nothing_else(
    cluster: Cluster, kubectl: Kubectl, release: tuple[str, str], tmp_path: Path
) -> None:
    namespace, account = release
    apply(
        kubectl,
        {
            "apiVersion": "sparsam.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "clf", "namespace": namespace, "annotations": {"team": "a"}},
            "spec": {
                "model": {"uri": "pvc://models/clf"},
                "resources": {"gpus": 0},
                "replicas": {"min": 0, "max": 2},
            },
        },
    )
    config = token_kubeconfig(
        cluster, kubectl, namespace, f"{account}-activator", tmp_path / "activator.kubeconfig"
    )

    def patch(body: dict[str, Any], *extra: str) -> Any:
        return kubectl(
            f"--kubeconfig={config}",
            "patch",
            "inferenceservice",
            "clf",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps(body),
            *extra,
            check=False,
        )

    image = {"spec": {"image": "attacker.example/server:1"}}
    # The apiserver loads a new policy within a second or so: dry runs until it refuses.
    eventually(
        "the wake-only policy in force",
        lambda: patch(image, "--dry-run=server").returncode != 0,
        None,
        timeout=30,
    )
    for change in (
        image,
        {"spec": {"replicas": {"min": 0, "max": 100}}},
        {"metadata": {"labels": {"x": "y"}}},
        {"metadata": {"annotations": {"team": None}}},
        {"metadata": {"annotations": {"another": "1"}}},
        {"metadata": {"finalizers": ["example.com/hold"]}},
    ):
        done = patch(change)
        assert done.returncode != 0, f"the activator changed {change}"
        assert "may change only the annotation " + c.ANNOTATION_WAKE_REQUESTED in done.stderr
    done = patch(
        {"metadata": {"annotations": {c.ANNOTATION_WAKE_REQUESTED: "2026-01-01T00:00:00Z"}}}
    )
    assert done.returncode == 0, done.stderr
    after = get(kubectl, "inferenceservice", "clf", "-n", namespace)
    assert after["metadata"]["annotations"][c.ANNOTATION_WAKE_REQUESTED] == "2026-01-01T00:00:00Z"
    assert after["metadata"]["annotations"]["team"] == "a"
    assert "image" not in after["spec"] and after["spec"]["replicas"]["max"] == 2
    # RBAC refuses the rest outright: no status, no delete.
    deleted = kubectl(
        f"--kubeconfig={config}", "delete", "inferenceservice", "clf", "-n", namespace, check=False
    )
    assert deleted.returncode != 0


def test_namespace_scoped_install_rbac_audit_and_the_operator_serving_only_its_namespaces(
    helm: Callable[..., str],
    kubectl: Kubectl,
    cluster: Cluster,
    namespace: str,
    cluster_scoped_name: Callable[[str, str], str],
    gpu_type: str,
    tmp_path: Path,
) -> None:
    work = f"work-{namespace[-6:]}"
    kubectl("create", "namespace", work)
    try:
        with installed(helm, kubectl, namespace, f"watchNamespaces={{{work}}}") as (_, account):
            who = f"system:serviceaccount:{namespace}:{account}"
            for verb, resource, where, expected in (
                ("create", "pods", ["-n", work], "yes"),
                ("delete", "pods", ["-n", work], "yes"),
                ("create", "pods/eviction", ["-n", work], "yes"),
                ("patch", "deployments.apps", ["-n", work], "yes"),
                ("patch", "services", ["-n", work], "yes"),
                ("patch", "inferenceservices.sparsam.dev/status", ["-n", work], "yes"),
                ("create", "events", ["-n", "default"], "yes"),
                ("list", "pods", ["-A"], "yes"),
                ("patch", "gpunodepools.sparsam.dev", [], "yes"),
                ("patch", "nodes", [], "yes"),
                ("create", "pods", ["-A"], "no"),
                ("create", "pods", ["-n", namespace], "no"),
                ("create", "pods", ["-n", "kube-system"], "no"),
                ("create", "pods/eviction", ["-n", "kube-system"], "no"),
                ("patch", "deployments.apps", ["-A"], "no"),
                ("create", "events", ["-n", "kube-system"], "no"),
                ("patch", "trainingjobs.sparsam.dev/status", ["-A"], "no"),
                ("get", "secrets", ["-n", work], "no"),
                ("update", "trainingjobs.sparsam.dev", ["-n", work], "no"),
            ):
                found = can_i(kubectl, who, verb, resource, *where)
                assert found == expected, f"can-i {verb} {resource} {where}: {found}"

            def service(in_namespace: str) -> dict[str, Any]:
                return {
                    "apiVersion": "sparsam.dev/v1alpha1",
                    "kind": "InferenceService",
                    "metadata": {"name": "clf", "namespace": in_namespace},
                    "spec": {
                        "model": {"uri": "pvc://models/clf"},
                        "resources": {"gpus": 0},
                        "replicas": {"min": 1, "max": 1},
                    },
                }

            apply(kubectl, service(work))
            apply(kubectl, service(namespace))
            pool_name = cluster_scoped_name("gpunodepool", "ns")
            apply(kubectl, pool(pool_name, gpu_type, "spot"))
            kubeconfig = token_kubeconfig(
                cluster, kubectl, namespace, account, tmp_path / "service-account.kubeconfig"
            )
            operator = Operator(kubeconfig, tmp_path / "operator.log", f"--namespace={work}")
            operator.start()
            try:
                eventually(
                    "the watched namespace's InferenceService served",
                    lambda: get(
                        kubectl, "deployments", "-n", work, "-l", "sparsam.dev/inference-service"
                    )["items"],
                    operator,
                )
                eventually(
                    "the cluster-scoped pool served",
                    lambda: get(kubectl, "gpunodepool", pool_name).get("status"),
                    operator,
                )
                # Its writes are done; the other namespace's service was there all along.
                assert "status" not in get(kubectl, "inferenceservice", "clf", "-n", namespace)
                assert not get(
                    kubectl, "deployments", "-n", namespace, "-l", "sparsam.dev/inference-service"
                )["items"]
                kubectl("delete", "gpunodepool", pool_name, "--timeout=60s")
            finally:
                operator.stop()
            refused = [
                line
                for line in (tmp_path / "operator.log").read_text().splitlines()
                if "forbidden: User" in line or who in line
            ]
            assert not refused, "\n".join(refused[:20])
    finally:
        kubectl("delete", "namespace", work, "--wait=false", check=False)


def test_the_crd_chart_adopts_the_installed_crds_upgrades_and_keeps_them(
    helm: Callable[..., str], kubectl: Kubectl
) -> None:
    """The upgrade path of docs/operations.md: CRDs that no release owns (the dev cluster's,
    as a first `helm install` of charts/sparsam leaves them) are adopted by sparsam-crds,
    upgraded with it, and kept when it is uninstalled."""
    names = [
        d["metadata"]["name"]
        for d in yaml.safe_load_all(helm("template", "c", str(CRD_CHART)))
        if d
    ]
    for name in names:
        kubectl("label", "crd", name, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        kubectl(
            "annotate",
            "crd",
            name,
            "meta.helm.sh/release-name=sparsam-crds",
            "meta.helm.sh/release-namespace=default",
            "--overwrite",
        )
    helm("upgrade", "--install", "sparsam-crds", str(CRD_CHART), "-n", "default")
    try:
        helm("upgrade", "sparsam-crds", str(CRD_CHART), "-n", "default")
        for name in names:
            crd = get(kubectl, "crd", name)
            assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
            assert crd["metadata"]["labels"]["helm.sh/chart"] == "sparsam-crds-0.1.0"
    finally:
        helm("uninstall", "sparsam-crds", "-n", "default")
    for name in names:
        assert get(kubectl, "crd", name)["metadata"]["name"] == name
