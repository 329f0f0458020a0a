"""Which metric names exist, and which ones a PromQL query uses.

The names that exist are read from the services' ``metrics.py`` files with ``ast``
(no import, so no side effect on the default registry): the first argument of every
``Counter``/``Gauge``/``Histogram`` and of the broker collector's metric families,
with the suffixes Prometheus exposition adds.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from deploy.manifests import ROOT

METRICS_FILES = (
    ROOT / "services" / "edge" / "django_ws_edge" / "metrics.py",
    ROOT / "services" / "broker" / "django_ws_broker" / "metrics.py",
)

_KIND_OF_CALL = {
    "Counter": "counter", "CounterMetricFamily": "counter", "counter": "counter",
    "counter_by": "counter",
    "Gauge": "gauge", "GaugeMetricFamily": "gauge", "gauge": "gauge",
    "Histogram": "histogram", "HistogramMetricFamily": "histogram",
    "Summary": "summary", "SummaryMetricFamily": "summary",
}
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}

# Grafana's variables that are not valid PromQL, with values that are.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "atan2", "inf", "nan",
}


def declared_metrics(files: tuple[Path, ...] = METRICS_FILES) -> dict[str, str]:
    """Metric family name -> kind, for every metric the services declare."""
    found: dict[str, str] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            first = node.args[0]
            if name in _KIND_OF_CALL and isinstance(first, ast.Constant) and isinstance(
                first.value, str
            ):
                found[first.value] = _KIND_OF_CALL[name]
    return found


def exposed_series(metrics: dict[str, str]) -> set[str]:
    """Series names a scrape shows: counters with ``_total``, histograms in three parts."""
    return {f"{name}{suffix}" for name, kind in metrics.items() for suffix in _SUFFIXES[kind]}


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's interval variables replaced, so that
    Prometheus' parser accepts it (label variables sit inside strings already)."""
    for variable, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Strings, label matchers, ranges and grouping clauses are removed first; what
    remains is functions (followed by a parenthesis), keywords, numbers and metric
    names.
    """
    text = as_promql(expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def label_values_metric(query: str) -> str | None:
    """The metric of a Grafana ``label_values(metric, label)`` variable query."""
    match = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)\s*", query)
    return match.group(1) if match else None
