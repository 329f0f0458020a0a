"""Loading the chart's Grafana dashboards and the PromQL queries of their panels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models import prometheus as prometheus_model

from deploy.manifests import CHART

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))


def load(path: Path) -> dashboard_model.Dashboard:
    plugins.register_default_plugins()
    return dashboard_model.Dashboard.from_json(json.loads(path.read_text()))


def panels(board: dashboard_model.Dashboard) -> list[Any]:
    found = []
    for panel in board.panels or []:
        found.append(panel)
        found.extend(getattr(panel, "panels", None) or [])  # panels inside collapsed rows
    return [p for p in found if isinstance(p, dashboard_model.Panel)]


def queries(board: dashboard_model.Dashboard) -> list[str]:
    found = []
    for panel in panels(board):
        for target in panel.targets or []:
            assert isinstance(target, prometheus_model.Dataquery), (
                f"{panel.title}: not a Prometheus query"
            )
            found.append(target.expr)
    return found


def all_queries() -> list[tuple[str, str]]:
    return [(path.name, expr) for path in DASHBOARDS for expr in queries(load(path))]
