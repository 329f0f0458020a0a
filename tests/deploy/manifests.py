"""Loading rendered manifests and answering the questions the tests ask of them.

Kubernetes' schemas say whether each object is well formed; they do not say whether
a Service's selector finds the pods or a probe names a port that exists. The helpers
here make those questions one-liners for the tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "django-ws-grpc"
FULL_VALUES = CHART / "ci" / "values-full.yaml"
KUSTOMIZE_BASE = ROOT / "k8s" / "base"
KUBERNETES_VERSION = "1.30.0"

YAMLLINT_CONFIG = """
extends: default
rules:
  line-length:
    max: 100
    allow-non-breakable-inline-mappings: true
"""

# Labels that say who rendered an object, not what it is.
HELM_BOOKKEEPING_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
}


Doc = dict[str, Any]


@dataclass
class Release:
    """The objects of one rendering of the chart (or of the kustomize base)."""

    name: str
    namespace: str
    values: dict[str, Any]
    docs: list[Doc]
    notes: str = ""

    def all(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Doc:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def workload(self, component: str) -> Doc:
        """The Deployment or StatefulSet whose pods carry ``component``."""
        found = [
            d
            for d in self.docs
            if d["kind"] in ("Deployment", "StatefulSet")
            and pod_labels(d).get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one workload for {component}, found {len(found)}"
        return found[0]


def load_docs(texts: Iterable[str]) -> list[Doc]:
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def render_chart(
    values: dict[str, Any] | None = None, name: str = "chat", namespace: str = "apps"
) -> Release:
    """Render with Helm's own engine (helm-python-sdk, Helm v4)."""
    import helm_python

    rendered = helm_python.Chart.load(CHART).render(values or {}, name=name, namespace=namespace)
    notes = "".join(v for k, v in rendered.items() if k.endswith("NOTES.txt"))
    docs = load_docs(v for k, v in sorted(rendered.items()) if k.endswith(".yaml"))
    return Release(name, namespace, values or {}, docs, notes)


def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def kustomize_files() -> list[Path]:
    kustomization = yaml.safe_load((KUSTOMIZE_BASE / "kustomization.yaml").read_text())
    return [KUSTOMIZE_BASE / name for name in kustomization["resources"]]


# Pods and selectors -----------------------------------------------------------------


def pod_spec(workload: Doc) -> Doc:
    return cast(Doc, workload["spec"]["template"]["spec"])


def pod_labels(workload: Doc) -> dict[str, str]:
    return cast(dict[str, str], workload["spec"]["template"]["metadata"].get("labels", {}))


def container(workload: Doc, name: str | None = None) -> Doc:
    containers = pod_spec(workload)["containers"]
    if name is None:
        assert len(containers) == 1
        return cast(Doc, containers[0])
    return cast(Doc, next(c for c in containers if c["name"] == name))


def selects(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector (non-empty) selects objects with ``labels``."""
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


def container_ports(workload: Doc) -> dict[str, int]:
    """Named container ports of a workload's pods, name -> number."""
    return {
        p["name"]: p["containerPort"]
        for c in pod_spec(workload)["containers"]
        for p in c.get("ports", [])
        if "name" in p
    }


def port_exists(workload: Doc, port: int | str) -> bool:
    ports = container_ports(workload)
    return port in ports if isinstance(port, str) else port in ports.values()


def arg_value(args: list[str], flag: str) -> str:
    """The value after ``flag`` in a container's args (``--flag value`` form)."""
    assert args.count(flag) == 1, f"{flag} given {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def env_value(c: Doc, name: str) -> str | None:
    for item in c.get("env", []):
        if item["name"] == name:
            return cast("str | None", item.get("value"))
    return None


# Object identity, for comparing renderings ------------------------------------------


def without_helm_bookkeeping(doc: Doc) -> Doc:
    """A copy of ``doc`` without Helm's labels and the namespace Helm may set."""
    copy = cast(Doc, yaml.safe_load(yaml.safe_dump(doc)))
    metadata = copy["metadata"]
    metadata.pop("namespace", None)
    labels = metadata.get("labels", {})
    for label in HELM_BOOKKEEPING_LABELS:
        labels.pop(label, None)
    return copy


def key(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]
