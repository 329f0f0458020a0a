"""The kustomize base: clean YAML, and the same objects as the chart's defaults."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from deploy import DEPLOY_EXTRA

pytest.importorskip("yaml", reason=DEPLOY_EXTRA)
pytest.importorskip("helm_python", reason=DEPLOY_EXTRA)
yamllint_config = pytest.importorskip("yamllint.config", reason=DEPLOY_EXTRA)
yamllint_linter = pytest.importorskip("yamllint.linter", reason=DEPLOY_EXTRA)

from deploy.manifests import (  # noqa: E402
    CHART,
    KUSTOMIZE_BASE,
    YAMLLINT_CONFIG,
    Release,
    key,
    load_docs,
    render_chart,
    without_helm_bookkeeping,
)

LINTED = [
    *sorted(KUSTOMIZE_BASE.glob("*.yaml")),
    CHART / "Chart.yaml", CHART / "values.yaml", CHART / "ci" / "values-full.yaml",
]


@pytest.mark.parametrize("path", LINTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_yaml_is_lint_clean(path: Path) -> None:
    config = yamllint_config.YamlLintConfig(YAMLLINT_CONFIG)
    problems = list(yamllint_linter.run(path.read_text(), config, str(path)))
    assert not problems, "\n".join(f"{path.name}:{p.line}:{p.column} {p.desc} ({p.rule})"
                                   for p in problems)


def without_secret_values(doc: dict[str, Any]) -> dict[str, Any]:
    """A Secret's keys without its values: the chart's are random, the base's are
    placeholders (refused by brokers and edges until replaced)."""
    if doc["kind"] != "Secret":
        return doc
    values = {**doc.pop("data", {}), **doc.pop("stringData", {})}
    return {**doc, "keys": sorted(values)}


def test_base_equals_the_chart_defaults(kustomize_release: Release) -> None:
    """Helm's bookkeeping labels and the dashboards ConfigMap aside (Grafana users
    import helm/django-ws-grpc/dashboards/*.json), the base is the chart's defaults
    rendered as release "django-ws"."""
    chart = render_chart(name="django-ws", namespace="default")
    expected = {
        key(doc): without_secret_values(without_helm_bookkeeping(doc))
        for doc in chart.docs
        if not (doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-dashboards"))
    }
    actual = {
        key(doc): without_secret_values(without_helm_bookkeeping(doc))
        for doc in kustomize_release.docs
    }
    assert sorted(actual) == sorted(expected)
    for name, doc in expected.items():
        assert actual[name] == doc, f"k8s/base differs from the chart for {name}"
    print(f"k8s/base matches the chart's defaults: {len(actual)} objects")


def test_kubectl_kustomize_builds_the_same_objects(kustomize_release: Release) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the base was loaded file by file instead")
    built = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE_BASE)], check=True,
                           capture_output=True, text=True, timeout=60).stdout
    docs = {key(d): d for d in load_docs([built])}
    assert docs == {key(d): d for d in kustomize_release.docs}


def test_the_base_secret_is_a_placeholder_that_nothing_accepts() -> None:
    """The base's role secrets are public (in this repository): brokers and edges must
    refuse them, naming the file, so nobody runs with them by mistake."""
    from django_ws_proto.credentials import SecretFileError, parse_secrets

    secret = next(
        doc for doc in load_docs([(KUSTOMIZE_BASE / "broker-auth-secret.yaml").read_text()])
    )
    assert sorted(secret["stringData"]) == ["admin", "edge", "publisher"]
    for role, value in secret["stringData"].items():
        with pytest.raises(SecretFileError, match="is a placeholder") as refused:
            parse_secrets(value, f"/etc/django-ws/auth/{role}")
        print(refused.value)
