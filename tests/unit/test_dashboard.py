"""The Grafana dashboard of the chart (charts/sparsam/dashboards/sparsam.json): its shape, its
data source variable, and that every metric it queries is one the operator or the activator
exports, so that renaming a metric breaks this test rather than a panel. That every expression
parses and runs in a real Prometheus is tests/integration/test_chart_observability.py's job."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sparsam.activator.metrics import ActivatorMetrics
from sparsam.metrics import REGISTRY

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "charts" / "sparsam" / "dashboards" / "sparsam.json"
)
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
METRIC_NAME = re.compile(r"sparsam_[a-z_]+")
# What Prometheus appends to a histogram's (and a summary's) name in the exposition.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL-ish queries of the query variables (``label_values(...)`` and friends)."""
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target."""
    return [
        target["expr"]
        for panel in all_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def exported_metric_names() -> set[str]:
    """The series names the operator's and the activator's registries export: a counter's with
    ``_total``; a histogram's by its base name (its suffixes map to it in `metric_names`)."""
    names = set()
    for registry in (REGISTRY, ActivatorMetrics().registry):
        for family in registry.collect():
            names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def metric_names(expression: str, exported: set[str]) -> set[str]:
    """The sparsam metric names in `expression`, histogram suffixes mapped to their base."""
    names = set()
    for name in METRIC_NAME.findall(expression):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in exported:
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def test_it_is_a_dashboard_grafana_provisions() -> None:
    dashboard = load()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] == "sparsam-overview"
    assert dashboard["title"]
    # Provisioned dashboards must not carry a database id.
    assert dashboard.get("id") is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    namespace = variables["namespace"]
    assert namespace["type"] == "query"
    assert namespace["datasource"] == DATASOURCE
    assert "label_values(" in json.dumps(namespace["query"])
    # "All" must be a regex every namespace matches: the panels select with =~"$namespace".
    assert namespace["includeAll"] and namespace["allValue"] == ".*"


def test_panel_ids_are_unique_and_every_panel_uses_the_datasource_variable() -> None:
    panels = list(all_panels(load()["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    for panel in panels:
        assert panel.get("datasource") == DATASOURCE, f"panel {panel['title']!r}"
        for target in panel.get("targets", []):
            assert target.get("datasource") == DATASOURCE, f"panel {panel['title']!r}"
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']!r} has no query"
            assert panel.get("description"), f"panel {panel['title']!r} has no description"


def test_panels_fit_the_grid_and_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in all_panels(load()["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[x, y]!r}"
                taken[x, y] = panel["title"]


def test_every_metric_queried_is_one_the_operator_or_the_activator_exports() -> None:
    dashboard = load()
    exported = exported_metric_names()
    expressions = dashboard_expressions(dashboard) + variable_queries(dashboard)
    used: set[str] = set()
    for expression in expressions:
        names = metric_names(expression, exported)
        assert names, f"no sparsam metric in {expression!r}"
        assert names <= exported, f"{expression!r} queries unknown {sorted(names - exported)}"
        used |= names
    # What the dashboard exists to show: a panel for each of these.
    assert {
        "sparsam_cost_dollars_total",
        "sparsam_on_demand_equivalent_dollars_total",
        "sparsam_gpu_seconds_total",
        "sparsam_preemptions_total",
        "sparsam_worker_failures_total",
        "sparsam_gpunodepool_allocated_gpus",
        "sparsam_gpunodepool_gpus",
        "sparsam_gpunodepool_nodes",
        "sparsam_inferenceservice_replicas",
        "sparsam_inferenceservice_ready_replicas",
        "sparsam_inferenceservice_scaled_to_zero_total",
        "sparsam_inferenceservice_wakes_total",
        "sparsam_activator_held_requests",
        "sparsam_activator_hold_seconds",
        "sparsam_costpolicy_spent_dollars",
        "sparsam_costpolicy_budget_dollars",
    } <= used


HOLD_P99 = "histogram_quantile(0.99, sum by (le) (rate(sparsam_activator_hold_seconds_bucket[5m])))"


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        pytest.param(
            HOLD_P99,
            {"sparsam_activator_hold_seconds"},
            id="histogram-bucket-maps-to-base",
        ),
        pytest.param(
            "sum(rate(sparsam_cost_dollars_total[5m])) / sum(rate(sparsam_costs_total[5m]))",
            {"sparsam_cost_dollars_total", "sparsam_costs_total"},
            id="a-renamed-metric-is-seen",
        ),
        pytest.param(
            "sparsam_worker_failures_count", {"sparsam_worker_failures_count"}, id="no-such-base"
        ),
    ],
)
def test_metric_names_are_parsed_from_expressions(expression: str, names: set[str]) -> None:
    assert metric_names(expression, exported_metric_names()) == names
