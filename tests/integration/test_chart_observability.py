"""The chart's observability assets: the PrometheusRule (prometheusRule.enabled) and the Grafana
dashboard ConfigMap (grafanaDashboard.enabled). `helm template` renders them (no cluster
needed); Debian's `promtool` checks the rules and unit-tests every alert on synthetic series;
a real Prometheus runs every PromQL expression of the rules and of the dashboard, so a typo or
an expression Prometheus refuses fails here rather than in someone's Grafana."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.test_dashboard import (
    DASHBOARD,
    dashboard_expressions,
    exported_metric_names,
    metric_names,
    variable_queries,
)

from sparsam.demo.prometheus import PrometheusError, find_binary, running_prometheus
from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.tools import HELM, KUBERNETES_VERSION, ensure_binaries

CHART = Path(__file__).resolve().parents[2] / "charts" / "sparsam"
RELEASE = "t"
NAMESPACE = "sparsam-system"
ENABLED = ("prometheusRule.enabled=true", "grafanaDashboard.enabled=true")
ALERTS = {
    "SparsamBudgetAlert",
    "SparsamBudgetExceeded",
    "SparsamOperatorDown",
    "SparsamActivatorDown",
    "SparsamTrainingJobStuckPending",
    "SparsamInferenceServiceNotReady",
}
# Grafana's variables as a query would see them: ranges, and "All" for $namespace.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "1h",
    "${namespace}": ".*",
    "$namespace": ".*",
}
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="module")
def helm() -> Callable[..., str]:
    try:
        binary = ensure_binaries(tools=(HELM,))["helm"]
    except DevClusterError as error:
        pytest.fail(f"helm is needed to render the chart: {error}", pytrace=False)

    def run(*args: str) -> str:
        # A helm built from source assumes Kubernetes 1.20, below the chart's kubeVersion.
        version = (
            [f"--kube-version={KUBERNETES_VERSION}"] if args[0] in ("template", "lint") else []
        )
        done = subprocess.run(
            [str(binary), *args, *version], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
        return done.stdout

    return run


@pytest.fixture(scope="module")
def render(helm: Callable[..., str]) -> Render:
    def run(*sets: str) -> list[dict[str, Any]]:
        text = helm(
            "template",
            RELEASE,
            str(CHART),
            f"--namespace={NAMESPACE}",
            *(f"--set={s}" for s in sets),
        )
        return [doc for doc in yaml.safe_load_all(text) if doc]

    return run


@pytest.fixture(scope="module")
def promtool() -> Path:
    """Debian's promtool: $SPARSAM_PROMTOOL, next to the prometheus binary, on PATH, or in
    /usr/bin. Missing is a failure, not a skip: `make prometheus` installs it."""
    configured = os.environ.get("SPARSAM_PROMTOOL")
    candidates = [Path(configured)] if configured else []
    with contextlib.suppress(PrometheusError):
        candidates.append(find_binary().parent / "promtool")
    found = shutil.which("promtool")
    candidates += [Path(found)] if found else []
    candidates.append(Path("/usr/bin/promtool"))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "promtool is missing: install Debian's prometheus package (`make prometheus`, or "
        "apt-get install prometheus) or set SPARSAM_PROMTOOL to a promtool binary",
        pytrace=False,
    )


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def rule_groups(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = one(docs, "PrometheusRule")["spec"]["groups"]
    return groups


def alerts(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rule_groups(docs) for rule in group["rules"]}


def dashboard_configmaps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == "ConfigMap" and "sparsam.json" in doc["data"]]


def test_neither_renders_by_default(render: Render) -> None:
    docs = render()
    assert not [doc for doc in docs if doc["kind"] == "PrometheusRule"]
    assert not dashboard_configmaps(docs)


def test_lint_strict_with_both_enabled(helm: Callable[..., str]) -> None:
    helm("lint", "--strict", str(CHART), *(f"--set={s}" for s in ENABLED))


def test_the_rule_has_every_alert_each_naming_its_object(render: Render) -> None:
    docs = render(*ENABLED, "prometheusRule.labels.release=kube-prometheus-stack")
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    found = alerts(docs)
    assert set(found) == ALERTS
    # The object each alert concerns, as its annotations must name it.
    objects = {
        "SparsamBudgetAlert": r"CostPolicy \{\{ \$labels\.policy \}\}",
        "SparsamBudgetExceeded": r"CostPolicy \{\{ \$labels\.policy \}\}",
        "SparsamOperatorDown": rf"{NAMESPACE}/{RELEASE}-sparsam\b",
        "SparsamActivatorDown": rf"{NAMESPACE}/{RELEASE}-sparsam-activator\b",
        "SparsamTrainingJobStuckPending": (
            r"TrainingJob \{\{ \$labels\.namespace \}\}/\{\{ \$labels\.name \}\}"
        ),
        "SparsamInferenceServiceNotReady": (
            r"InferenceService \{\{ \$labels\.namespace \}\}/\{\{ \$labels\.name \}\}"
        ),
    }
    assert set(objects) == ALERTS
    for name, alert in found.items():
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        for annotation in ("summary", "description"):
            text = alert["annotations"][annotation]
            assert re.search(objects[name], text), (name, annotation, text)


def test_down_alerts_watch_the_jobs_the_service_monitors_scrape(render: Render) -> None:
    """A ServiceMonitor's job label is the scraped Service's name: the Down alerts must name
    exactly the Services the chart renders, in the release's namespace."""
    docs = render(*ENABLED, "serviceMonitor.enabled=true")
    services = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Service"}
    found = alerts(docs)
    for alert, service in [
        ("SparsamOperatorDown", f"{RELEASE}-sparsam-metrics"),
        ("SparsamActivatorDown", f"{RELEASE}-sparsam-activator"),
    ]:
        assert service in services
        assert found[alert]["expr"] == (
            f'absent(up{{job="{service}", namespace="{NAMESPACE}"}} == 1)'
        )
        assert found[alert]["for"] == "5m"
    without = alerts(render(*ENABLED, "activator.enabled=false"))
    assert set(without) == ALERTS - {"SparsamActivatorDown"}


def test_service_monitors_keep_the_objects_namespace_label(render: Render) -> None:
    """Our series carry the object's `namespace` label; without honorLabels the Prometheus
    Operator would rename it to exported_namespace, and the operator's own per-service
    queries, the alerts and the dashboard would all read the wrong namespace."""
    monitors = [d for d in render("serviceMonitor.enabled=true") if d["kind"] == "ServiceMonitor"]
    assert len(monitors) == 2
    assert all(e.get("honorLabels") is True for m in monitors for e in m["spec"]["endpoints"])
    # The workers' checkpoint metrics likewise, from every namespace, on the pods' port.
    (workers,) = [d for d in render("serviceMonitor.enabled=true") if d["kind"] == "PodMonitor"]
    assert workers["spec"]["namespaceSelector"] == {"any": True}
    assert workers["spec"]["selector"]["matchLabels"] == {"sparsam.dev/role": "worker"}
    (endpoint,) = workers["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["honorLabels"]) == ("metrics", True)


def test_thresholds_durations_and_alert_labels_are_values(render: Render) -> None:
    found = alerts(
        render(
            *ENABLED,
            "prometheusRule.budgetAlertThreshold=0.9",
            "prometheusRule.trainingPendingFor=30m",
            "prometheusRule.inferenceNotReadyFor=20m",
            "prometheusRule.downFor=2m",
            "prometheusRule.alertLabels.team=platform",
        )
    )
    assert found["SparsamBudgetAlert"]["expr"].endswith("> 0.9")
    assert "90%" in found["SparsamBudgetAlert"]["annotations"]["description"]
    assert found["SparsamTrainingJobStuckPending"]["for"] == "30m"
    assert found["SparsamInferenceServiceNotReady"]["for"] == "20m"
    assert found["SparsamOperatorDown"]["for"] == "2m"
    assert all(alert["labels"]["team"] == "platform" for alert in found.values())


def test_the_dashboard_configmap_carries_the_json_and_the_sidecar_label(render: Render) -> None:
    (configmap,) = dashboard_configmaps(render(*ENABLED))
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert json.loads(configmap["data"]["sparsam.json"]) == json.loads(DASHBOARD.read_text())
    (moved,) = dashboard_configmaps(
        render(
            *ENABLED,
            "grafanaDashboard.labels.grafana_dashboard=null",
            "grafanaDashboard.labels.dashboards=sparsam",
            "grafanaDashboard.namespace=monitoring",
            "grafanaDashboard.annotations.k8s-sidecar-target-directory=sparsam",
        )
    )
    assert "grafana_dashboard" not in moved["metadata"]["labels"]
    assert moved["metadata"]["labels"]["dashboards"] == "sparsam"
    assert moved["metadata"]["namespace"] == "monitoring"
    assert moved["metadata"]["annotations"] == {"k8s-sidecar-target-directory": "sparsam"}


def test_the_rules_pass_promtool_check(render: Render, promtool: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups(render(*ENABLED))}))
    done = subprocess.run(
        [str(promtool), "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"promtool check rules:\n{done.stdout}{done.stderr}"


def test_rule_expressions_use_only_exported_metrics(render: Render) -> None:
    exported = exported_metric_names()
    for name, alert in alerts(render(*ENABLED)).items():
        names = metric_names(alert["expr"], exported)
        assert names <= exported, f"{name} queries unknown {sorted(names - exported)}"


# --- the alerts, unit-tested by promtool on synthetic series ---------------------------------


def scraped(metric: str, pod: str = "a", /, **labels: str) -> str:
    """A series as Prometheus stores it from the chart's ServiceMonitor: the target's labels
    (job, namespace, instance, pod) with the exposition's own labels winning, which is what
    honorLabels: true does (without it, a metric's namespace label becomes exported_namespace
    and the operator's own queries of the activator's series break too)."""
    target = {
        "job": f"{RELEASE}-sparsam-metrics",
        "namespace": NAMESPACE,
        "instance": f"10.0.0.{ord(pod) - ord('a') + 1}:9090",
        "pod": f"{RELEASE}-sparsam-{pod}",
    }
    merged = {**target, **labels}
    return metric + "{" + ",".join(f'{key}="{value}"' for key, value in merged.items()) + "}"


SPENT, BUDGET = "sparsam_costpolicy_spent_dollars", "sparsam_costpolicy_budget_dollars"
PHASE = "sparsam_trainingjob_phase"
REPLICAS, READY = "sparsam_inferenceservice_replicas", "sparsam_inferenceservice_ready_replicas"
INPUT_SERIES = [
    # team-a at 85%, seen from two operator pods (a rollout): one warning, no error.
    (scraped(SPENT, policy="team-a"), "85x30"),
    (scraped(BUDGET, policy="team-a"), "100x30"),
    (scraped(SPENT, "b", policy="team-a"), "85x30"),
    (scraped(BUDGET, "b", policy="team-a"), "100x30"),
    # team-b over budget: both budget alerts.
    (scraped(SPENT, policy="team-b"), "120x30"),
    (scraped(BUDGET, policy="team-b"), "100x30"),
    # team-c at 50%, and team-d without a budget (no budget series): nothing.
    (scraped(SPENT, policy="team-c"), "50x30"),
    (scraped(BUDGET, policy="team-c"), "100x30"),
    (scraped(SPENT, policy="team-d"), "5000x30"),
    # The operator's target goes down after 4 minutes; the activator's was never scraped.
    (scraped("up"), "1x4 0x26"),
    # ml/bert stays Pending; ml/gpt leaves Pending for Running after 3 minutes.
    (scraped(PHASE, namespace="ml", name="bert", phase="Pending"), "1x30"),
    (scraped(PHASE, namespace="ml", name="gpt", phase="Pending"), "1x3 stale"),
    (scraped(PHASE, namespace="ml", name="gpt", phase="Running"), "_x4 1x26"),
    # prod/chat wants 2 replicas and has none ready; prod/idle is at zero; prod/ok is fine.
    (scraped(REPLICAS, namespace="prod", name="chat"), "2x30"),
    (scraped(READY, namespace="prod", name="chat"), "0x30"),
    (scraped(REPLICAS, namespace="prod", name="idle"), "0x30"),
    (scraped(READY, namespace="prod", name="idle"), "0x30"),
    (scraped(REPLICAS, namespace="prod", name="ok"), "2x30"),
    (scraped(READY, namespace="prod", name="ok"), "2x30"),
]
# alert -> minute -> [(labels of a firing alert, its $value)]
FIRING: dict[str, dict[int, list[tuple[dict[str, str], float]]]] = {
    "SparsamBudgetAlert": {
        3: [],
        6: [({"policy": "team-a"}, 0.85), ({"policy": "team-b"}, 1.2)],
    },
    "SparsamBudgetExceeded": {3: [], 6: [({"policy": "team-b"}, 1.2)]},
    "SparsamOperatorDown": {
        8: [],
        10: [({"job": f"{RELEASE}-sparsam-metrics", "namespace": NAMESPACE}, 1)],
    },
    "SparsamActivatorDown": {
        4: [],
        6: [({"job": f"{RELEASE}-sparsam-activator", "namespace": NAMESPACE}, 1)],
    },
    "SparsamTrainingJobStuckPending": {
        14: [],
        16: [({"namespace": "ml", "name": "bert"}, 1)],
    },
    "SparsamInferenceServiceNotReady": {
        9: [],
        11: [({"namespace": "prod", "name": "chat"}, 2)],
    },
}


def expand(template: str, labels: dict[str, str], value: float) -> str:
    """Prometheus's alert templating, for the forms our annotations use."""

    def one(match: re.Match[str]) -> str:
        action = match.group(1)
        if label := re.fullmatch(r"\$labels\.(\w+)", action):
            return labels[label.group(1)]
        if action == "$value | humanizePercentage":
            return f"{value * 100:.4g}%"
        if action == "$value":
            return f"{value:g}"
        raise AssertionError(f"extend expand() for the template action {{{{ {action} }}}}")

    return re.sub(r"\{\{ (.+?) \}\}", one, template)


def test_each_alert_fires_on_what_it_watches(
    render: Render, promtool: Path, tmp_path: Path
) -> None:
    docs = render(*ENABLED)
    found = alerts(docs)
    assert set(FIRING) == ALERTS
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(docs)}))
    cases = [
        {
            "eval_time": f"{minute}m",
            "alertname": alert,
            "exp_alerts": [
                {
                    "exp_labels": {**labels, **found[alert]["labels"]},
                    "exp_annotations": {
                        key: expand(text, labels, value)
                        for key, text in found[alert]["annotations"].items()
                    },
                }
                for labels, value in firing
            ],
        }
        for alert, by_minute in FIRING.items()
        for minute, firing in by_minute.items()
    ]
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in INPUT_SERIES],
                "alert_rule_test": cases,
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [str(promtool), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"promtool test rules:\n{done.stdout}{done.stderr}"


# --- every expression, run by a real Prometheus ----------------------------------------------


def grafana_to_promql(expression: str) -> str:
    """`expression` as Grafana would send it: its variables replaced by plain values, and a
    variable query's label_values(selector, label) as the instant query it stands for."""
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    assert "$" not in expression, f"a Grafana variable this test does not know: {expression!r}"
    if found := LABEL_VALUES.match(expression):
        return f"group by ({found['label']}) ({found['selector']})"
    return expression


def test_every_expression_runs_in_a_real_prometheus(render: Render, tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        *(grafana_to_promql(e) for e in dashboard_expressions(dashboard)),
        *(grafana_to_promql(q) for q in variable_queries(dashboard)),
        *(alert["expr"] for alert in alerts(render(*ENABLED)).values()),
    ]
    assert len(expressions) > 20
    failures = []
    with running_prometheus([], tmp_path) as prometheus:
        for expression in expressions:
            try:
                prometheus.query(expression)
            except PrometheusError as error:
                failures.append(str(error))
    assert not failures, "\n".join(failures)
