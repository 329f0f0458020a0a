"""Schema checks: Kubernetes' own schemas for built-in kinds (kubernetes-validate,
strict), and a structural check for the Prometheus Operator's ServiceMonitor, a CRD
that no bundled schema covers."""

from __future__ import annotations

import re
from typing import Any

from deploy.manifests import KUBERNETES_VERSION, Doc

# The Prometheus Operator's duration pattern (monitoringv1.Duration).
DURATION_RE = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                         r"(([0-9]+)s)?(([0-9]+)ms)?)$")
SERVICE_MONITOR_SPEC = {
    "attachMetadata", "bodySizeLimit", "endpoints", "jobLabel", "keepDroppedTargets",
    "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit", "namespaceSelector",
    "podTargetLabels", "sampleLimit", "scrapeClass", "scrapeProtocols", "selector",
    "targetLabels", "targetLimit",
}
SERVICE_MONITOR_ENDPOINT = {
    "authorization", "basicAuth", "bearerTokenFile", "bearerTokenSecret", "enableHttp2",
    "filterRunning", "followRedirects", "honorLabels", "honorTimestamps", "interval",
    "metricRelabelings", "oauth2", "params", "path", "port", "proxyUrl", "relabelings",
    "scheme", "scrapeTimeout", "targetPort", "tlsConfig", "trackTimestampsStaleness",
}


def validate(doc: Doc) -> None:
    """Raise AssertionError naming the object and the first schema violation."""
    if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
        check_service_monitor(doc)
        return
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise AssertionError(
            f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {where}"
        ) from None


def _seconds(duration: str) -> float:
    units = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|[ywdhms])", duration))


def check_service_monitor(doc: Doc) -> None:
    name = doc["metadata"]["name"]
    assert doc["apiVersion"] == "monitoring.coreos.com/v1", name
    assert doc["kind"] == "ServiceMonitor", name
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, name
    spec: dict[str, Any] = doc["spec"]
    assert set(spec) <= SERVICE_MONITOR_SPEC, f"{name}: unknown {set(spec) - SERVICE_MONITOR_SPEC}"
    match_labels = spec["selector"]["matchLabels"]
    assert match_labels and all(isinstance(v, str) for v in match_labels.values()), name
    namespaces = spec.get("namespaceSelector", {})
    assert set(namespaces) <= {"any", "matchNames"}, name
    assert all(isinstance(n, str) for n in namespaces.get("matchNames", [])), name
    assert spec["endpoints"], f"{name}: no endpoints"
    for endpoint in spec["endpoints"]:
        unknown = set(endpoint) - SERVICE_MONITOR_ENDPOINT
        assert not unknown, f"{name}: unknown endpoint fields {unknown}"
        assert isinstance(endpoint.get("port"), str), f"{name}: endpoints name a Service port"
        assert endpoint.get("path", "/metrics").startswith("/"), name
        for field in ("interval", "scrapeTimeout"):
            if field in endpoint:
                assert DURATION_RE.match(endpoint[field]), f"{name}: {field} {endpoint[field]!r}"
        if "interval" in endpoint and "scrapeTimeout" in endpoint:
            assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"]), (
                f"{name}: scrapeTimeout longer than interval"
            )
