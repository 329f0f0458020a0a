"""The Helm chart: lint, the optional parts (TLS, ServiceMonitors, Ingress, HPA,
dashboards), its notes and docs, and its refusal of values that would break a cluster."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy import DEPLOY_EXTRA

pytest.importorskip("yaml", reason=DEPLOY_EXTRA)
helm_python = pytest.importorskip("helm_python", reason=DEPLOY_EXTRA)

from deploy.manifests import (  # noqa: E402
    CHART,
    FULL_VALUES,
    Release,
    arg_value,
    container,
    container_ports,
    env_value,
    load_values,
    pod_labels,
    pod_spec,
    render_chart,
    selects,
)


@pytest.mark.parametrize("values_file", [None, FULL_VALUES], ids=["defaults", "full"])
def test_helm_lint_strict(values_file: Path | None) -> None:
    values = load_values(values_file) if values_file else None
    report = helm_python.lint(CHART, values, strict=True, kube_version="v1.30.0",
                              namespace="apps")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report
    print(f"helm lint --strict: {[m['error'] for m in report['messages']]}")


def test_tls_wires_certificates_into_both_sides(full_release: Release) -> None:
    tls = full_release.values["tls"]
    broker_workload = full_release.workload("broker")
    broker = container(broker_workload)
    mount = next(m for m in broker["volumeMounts"] if m["name"] == "tls")
    assert mount["readOnly"] is True
    for flag, file in (("--tls-cert", "tls.crt"), ("--tls-key", "tls.key"),
                       ("--tls-client-ca", "ca.crt")):
        assert arg_value(broker["args"], flag) == f"{mount['mountPath']}/{file}"
    volume = next(v for v in pod_spec(broker_workload)["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == tls["existingSecret"]

    edge_workload = full_release.workload("edge")
    edge = container(edge_workload)
    mount = next(m for m in edge["volumeMounts"] if m["name"] == "tls")
    for name, file in (("DJANGO_WS_TLS_CA", "ca.crt"), ("DJANGO_WS_TLS_CERT", "tls.crt"),
                       ("DJANGO_WS_TLS_KEY", "tls.key")):
        assert env_value(edge, name) == f"{mount['mountPath']}/{file}"
    volume = next(v for v in pod_spec(edge_workload)["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == tls["clientSecret"]


def test_tls_without_mutual_gives_edges_only_the_ca(full_release: Release) -> None:
    values = {**full_release.values, "tls": {**full_release.values["tls"], "mutual": False}}
    release = render_chart(values)
    broker = container(release.workload("broker"))
    assert "--tls-client-ca" not in broker["args"]
    edge_workload = release.workload("edge")
    edge = container(edge_workload)
    assert env_value(edge, "DJANGO_WS_TLS_CA")
    assert env_value(edge, "DJANGO_WS_TLS_CERT") is None
    volume = next(v for v in pod_spec(edge_workload)["volumes"] if v["name"] == "tls")
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


def test_defaults_have_no_optional_parts(default_release: Release) -> None:
    kinds = {d["kind"] for d in default_release.docs}
    assert not kinds & {"Ingress", "HorizontalPodAutoscaler", "ServiceMonitor"}
    for c in [container(default_release.workload(k)) for k in ("edge", "broker")]:
        assert not any("tls" in str(a) for a in c["args"])


def role_secrets(release: Release) -> dict[str, str]:
    secret = release.one("Secret", f"{release.name}-django-ws-broker-auth")
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_role_secrets_are_generated_random_and_distinct(default_release: Release) -> None:
    from django_ws_proto.credentials import parse_secrets

    found = role_secrets(default_release)
    assert sorted(found) == ["admin", "edge", "publisher"]
    assert len(set(found.values())) == 3
    for role, value in found.items():
        assert parse_secrets(value, role) == (value,)  # one usable secret each
    again = role_secrets(render_chart())
    # Offline (no cluster to look up) each rendering draws new ones; installed, the
    # template looks up the Secret it made before and keeps its values.
    assert all(again[role] != found[role] for role in found)
    template = (CHART / "templates" / "broker-auth-secret.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in template
    print(f"role secrets: {', '.join(f'{k} {len(v)} chars' for k, v in sorted(found.items()))}")


def test_given_role_secrets_are_used_as_they_are() -> None:
    given = {
        "edge": "e" * 32,
        "publisher": "p" * 32 + "\n" + "q" * 32,  # rotating: two accepted
        "admin": "a" * 32,
    }
    release = render_chart({"auth": given})
    assert role_secrets(release) == given


def test_an_existing_secret_replaces_the_generated_one(full_release: Release) -> None:
    name = full_release.values["auth"]["existingSecret"]
    assert not full_release.all("Secret")
    for component in ("edge", "broker"):
        volume = next(
            v for v in pod_spec(full_release.workload(component))["volumes"] if v["name"] == "auth"
        )
        assert volume["secret"]["secretName"] == name


def test_without_auth_nothing_is_mounted_or_configured() -> None:
    release = render_chart({"auth": {"enabled": False}})
    assert not release.all("Secret")
    for component in ("edge", "broker"):
        workload = release.workload(component)
        assert all(v["name"] != "auth" for v in pod_spec(workload)["volumes"])
        names = [e["name"] for e in container(workload).get("env", [])]
        assert not [n for n in names if "SECRET" in n]


def test_service_monitors_scrape_both_metrics_ports(full_release: Release) -> None:
    monitors = full_release.all("ServiceMonitor")
    assert len(monitors) == 2
    workloads = {k: full_release.workload(k) for k in ("edge", "broker")}
    expected_ports = {"edge": "health", "broker": "metrics"}
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [full_release.namespace]
        services = [s for s in full_release.all("Service")
                    if selects(monitor["spec"]["selector"]["matchLabels"],
                               s["metadata"]["labels"])]
        assert len(services) == 1, monitor["metadata"]["name"]
        service = services[0]
        component = next(k for k, w in workloads.items()
                         if selects(service["spec"]["selector"], pod_labels(w)))
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
        assert port["targetPort"] == expected_ports[component]
        assert port["targetPort"] in container_ports(workloads[component])
    broker = container(workloads["broker"])
    assert arg_value(broker["args"], "--metrics") == (
        f"0.0.0.0:{container_ports(workloads['broker'])['metrics']}"
    )


def test_ingress_keeps_websockets_open(full_release: Release) -> None:
    ingress = full_release.one("Ingress")
    annotations = ingress["metadata"]["annotations"]
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{name}"]) >= 3600
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    edge_service = full_release.one("Service", ingress["spec"]["rules"][0]["http"]["paths"][0]
                                    ["backend"]["service"]["name"])
    assert edge_service["spec"]["ports"][0]["name"] == "http"
    assert ingress["spec"]["ingressClassName"] == "nginx"


def test_user_annotations_win_over_ingress_defaults(full_release: Release) -> None:
    values = load_values(FULL_VALUES)
    values["edge"]["ingress"]["annotations"] = {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "86400"
    }
    annotations = render_chart(values).one("Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "86400"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"


def test_autoscaler_on_cpu_and_open_connections(full_release: Release) -> None:
    metrics = full_release.one("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 60}}} in metrics
    pods = next(m["pods"] for m in metrics if m["type"] == "Pods")
    assert pods["metric"]["name"] == "django_ws_edge_connections_open"
    assert pods["target"] == {"type": "AverageValue", "averageValue": "20000"}


def test_dashboards_ship_in_a_sidecar_config_map(release_with_dashboards: Release) -> None:
    config_map = next(d for d in release_with_dashboards.all("ConfigMap")
                      if d["metadata"]["name"].endswith("-dashboards"))
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {p.name: p.read_text() for p in (CHART / "dashboards").glob("*.json")}
    assert set(files) == {"edge.json", "broker.json"}
    assert {k: v.strip() for k, v in config_map["data"].items()} == {
        k: v.strip() for k, v in files.items()
    }


@pytest.fixture(params=["default_release", "full_release"])
def release_with_dashboards(request: pytest.FixtureRequest) -> Release:
    return request.getfixturevalue(request.param)


def test_dashboards_go_to_the_grafana_namespace(full_release: Release) -> None:
    config_map = full_release.one("ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "django-ws"}


def test_notes_show_how_to_try_it(default_release: Release) -> None:
    service = default_release.one("Service", "chat-django-ws-edge")
    port = service["spec"]["ports"][0]["port"]
    line = f"kubectl --namespace apps port-forward service/chat-django-ws-edge 8000:{port}"
    assert line in default_release.notes
    assert "ws://127.0.0.1:8000/ws/chat/ROOM/" in default_release.notes
    assert "django-ws/broker-client=\"true\"" in default_release.notes
    print(line)


FREE_FORM = {
    # Maps and lists whose contents are the user's (labels, Kubernetes objects).
    "podSecurityContext", "containerSecurityContext", "imagePullSecrets",
    "edge.command", "edge.extraArgs", "edge.env", "edge.envFrom", "edge.resources",
    "edge.service.annotations", "edge.ingress.annotations", "edge.ingress.hosts",
    "edge.ingress.tls", "edge.httpRoute.annotations", "edge.httpRoute.parentRefs",
    "edge.httpRoute.hostnames", "edge.httpRoute.paths", "edge.podAnnotations", "edge.podLabels", "edge.nodeSelector",
    "edge.tolerations", "edge.affinity", "broker.command", "broker.extraArgs", "broker.env",
    "broker.resources", "broker.podAnnotations", "broker.podLabels", "broker.nodeSelector",
    "broker.tolerations", "networkPolicy.clientLabels", "networkPolicy.metricsFrom",
    "metrics.serviceMonitor.labels", "dashboards.labels", "dashboards.annotations",
}


def value_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for name, value in values.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and value and path not in FREE_FORM:
            yield from value_paths(value, f"{path}.")
        else:
            yield path


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    values = set(value_paths(load_values(CHART / "values.yaml")))
    assert values - documented == set(), "values missing from README.md's table"
    assert documented - values == set(), "README.md documents values that do not exist"
    print(f"README documents all {len(values)} values")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls": {"enabled": True}}, "tls.existingSecret is required"),
        ({"broker": {"replicas": 0}}, "broker.replicas is the shard count"),
        ({"edge": {"drain": {"marginSeconds": 1}}}, "marginSeconds must be at least 3"),
        ({"broker": {"antiAffinity": "sometimes"}}, "soft, hard or none"),
        ({"edge": {"httpRoute": {"enabled": True, "parentRefs": []}}}, "must name the Gateway"),
    ],
    ids=["tls-without-secret", "no-shards", "margin-too-small", "anti-affinity",
         "route-without-gateway"],
)
def test_values_that_would_break_a_cluster_are_refused(values: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render_chart(values)
