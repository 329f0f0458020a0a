"""The Grafana dashboards: Grafana's shape, generated from code, and every query built
on metrics the services really export."""

from __future__ import annotations

import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy import DEPLOY_EXTRA

pytest.importorskip("yaml", reason=DEPLOY_EXTRA)
pytest.importorskip("grafana_foundation_sdk", reason=DEPLOY_EXTRA)

import yaml
from grafana_foundation_sdk.models import dashboard as dashboard_model

from deploy.dashboards import DASHBOARDS, all_queries, load, panels, queries
from deploy.manifests import CHART
from deploy.promql import (
    as_promql,
    declared_metrics,
    exposed_series,
    label_values_metric,
    metric_names,
)


def test_the_chart_ships_two_dashboards() -> None:
    assert [p.name for p in DASHBOARDS] == ["broker.json", "edge.json"]


def test_dashboards_are_up_to_date_with_their_generator() -> None:
    generator = runpy.run_path(str(CHART / "dashboards" / "generate.py"))
    stale = [
        name
        for name, make in generator["DASHBOARDS"].items()
        if generator["render"](make) != (CHART / "dashboards" / name).read_text()
    ]
    assert not stale, f"run helm/django-ws-grpc/dashboards/generate.py: {stale} out of date"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_loads_as_a_grafana_model(path: Path) -> None:
    board = load(path)
    assert board.uid and board.title
    graphs = panels(board)
    assert graphs, "no panels"
    ids = [p.id_val for p in graphs] + [
        p.id_val for p in board.panels or [] if not isinstance(p, dashboard_model.Panel)
    ]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in graphs:
        assert panel.datasource is not None and panel.datasource.uid == "${datasource}", (
            f"{panel.title}: use the datasource variable"
        )
        assert panel.targets, f"{panel.title}: no queries"
        ref_ids = [t.ref_id for t in panel.targets]
        assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), panel.title
    variables = {v.name: v for v in board.templating.list_val or []}
    assert variables["datasource"].type_val == "datasource"
    print(f"{path.name}: {len(graphs)} panels, {len(queries(board))} queries")


def test_queries_use_only_metrics_the_services_export() -> None:
    declared = declared_metrics()
    assert len(declared) > 20, f"metrics.py parsing found only {sorted(declared)}"
    exposed = exposed_series(declared)
    used: set[str] = set()
    for name, expr in all_queries():
        names = metric_names(expr)
        assert names, f"{name}: no metric in {expr!r}"
        unknown = names - exposed
        assert not unknown, f"{name}: {sorted(unknown)} not exported (query {expr!r})"
        used |= names
    for path in DASHBOARDS:
        for variable in load(path).templating.list_val or []:
            if variable.type_val == "query":
                query = variable.query if isinstance(variable.query, str) else ""
                metric = label_values_metric(query)
                assert metric in exposed, f"{path.name}: variable {variable.name}: {query!r}"
                used.add(metric)
    unused = sorted(n for n in declared if not any(s.startswith(n) for s in used))
    print(f"{len(used)} series used; declared but not on a dashboard: {unused or 'none'}")


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, pod) (rate(django_ws_edge_x_bucket"
        '{namespace=~"$namespace", code!="1000"}[$__rate_interval]))) / on(pod) '
        "group_left() max without (edge) (django_ws_broker_y) offset 5m"
    )
    assert metric_names(expr) == {"django_ws_edge_x_bucket", "django_ws_broker_y"}


def test_promtool_accepts_every_query(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool is not installed (Debian: apt-get install prometheus); "
            "metric names were still checked against metrics.py"
        )
    rules = [
        {"record": f"django_ws:dashboard_query_{i}", "expr": as_promql(expr)}
        for i, (_, expr) in enumerate(all_queries())
    ]
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout.strip())
