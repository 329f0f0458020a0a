"""Schema checks: Kubernetes' own schemas for built-in kinds (kubernetes-validate,
strict), and structural checks for two CRDs that no bundled schema covers: the
Prometheus Operator's ServiceMonitor and the Gateway API's HTTPRoute."""

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


# Gateway API v1 HTTPRoute: fields and limits of its CRD (standard channel).
HTTP_ROUTE_SPEC = {"parentRefs", "hostnames", "rules"}
HTTP_ROUTE_RULE = {"name", "matches", "filters", "backendRefs", "timeouts", "retry",
                   "sessionPersistence"}
PARENT_REF = {"group", "kind", "namespace", "name", "sectionName", "port"}
BACKEND_REF = {"group", "kind", "namespace", "name", "port", "weight", "filters"}
PATH_TYPES = {"Exact", "PathPrefix", "RegularExpression"}
HOSTNAME_RE = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate(doc: Doc) -> None:
    """Raise AssertionError naming the object and the first schema violation."""
    if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
        check_service_monitor(doc)
        return
    if doc.get("apiVersion", "").startswith("gateway.networking.k8s.io/"):
        check_http_route(doc)
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


def check_http_route(doc: Doc) -> None:
    name = doc["metadata"]["name"]
    assert doc["apiVersion"] == "gateway.networking.k8s.io/v1", name
    assert doc["kind"] == "HTTPRoute", name
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, name
    spec: dict[str, Any] = doc["spec"]
    assert set(spec) <= HTTP_ROUTE_SPEC, f"{name}: unknown {set(spec) - HTTP_ROUTE_SPEC}"
    parents = spec.get("parentRefs", [])
    assert 1 <= len(parents) <= 32, f"{name}: 1 to 32 parentRefs"
    for parent in parents:
        assert set(parent) <= PARENT_REF and isinstance(parent.get("name"), str), name
    hostnames = spec.get("hostnames", [])
    assert len(hostnames) <= 16, name
    assert all(HOSTNAME_RE.match(h) for h in hostnames), f"{name}: bad hostname in {hostnames}"
    rules = spec.get("rules", [])
    assert 1 <= len(rules) <= 16, f"{name}: 1 to 16 rules"
    for rule in rules:
        assert set(rule) <= HTTP_ROUTE_RULE, f"{name}: unknown {set(rule) - HTTP_ROUTE_RULE}"
        matches = rule.get("matches", [])
        assert len(matches) <= 64, name
        for match in matches:
            path = match["path"]
            assert path["type"] in PATH_TYPES and path["value"].startswith("/"), name
        for backend in rule.get("backendRefs", []):
            assert set(backend) <= BACKEND_REF, name
            assert isinstance(backend["name"], str) and backend["name"], name
            port = backend.get("port")
            assert isinstance(port, int) and 0 < port < 65536, f"{name}: backend port {port!r}"
