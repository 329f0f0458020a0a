"""One origin in production: the chart routes one host's websocket paths to the edge
Service and every other path to the project's own Service, with an Ingress and with a
Gateway API HTTPRoute."""

from __future__ import annotations

import pytest

from deploy import DEPLOY_EXTRA

pytest.importorskip("yaml", reason=DEPLOY_EXTRA)
pytest.importorskip("helm_python", reason=DEPLOY_EXTRA)

from deploy import schemas
from deploy.manifests import Release, render_chart


def edge_service(release: Release) -> dict:
    return next(
        s for s in release.all("Service")
        if s["metadata"]["labels"].get("app.kubernetes.io/component") == "edge"
        and s["spec"].get("clusterIP") != "None"
        and any(p["name"] == "http" for p in s["spec"]["ports"])
    )


def test_ingress_sends_websocket_paths_to_edges_and_the_rest_to_the_app(
    full_release: Release,
) -> None:
    ingress = full_release.one("Ingress")
    routes = {
        p["path"]: p["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    print("Ingress routes:", {path: svc["name"] for path, svc in routes.items()})
    edge = edge_service(full_release)
    assert routes["/ws/"] == {"name": edge["metadata"]["name"], "port": {"name": "http"}}
    assert routes["/"] == {"name": "chat-web", "port": {"number": 8000}}
    assert ingress["spec"]["rules"][0]["host"] == "chat.example.com"


def test_http_route_sends_websocket_paths_to_edges_and_the_rest_to_the_app(
    full_release: Release,
) -> None:
    route = full_release.one("HTTPRoute")
    schemas.validate(route)
    spec = route["spec"]
    assert spec["parentRefs"] == [{"name": "public", "namespace": "gateways", "sectionName": "https"}]
    assert spec["hostnames"] == ["chat.example.com"]
    routes = {
        m["path"]["value"]: (r["backendRefs"][0]["name"], r["backendRefs"][0]["port"])
        for r in spec["rules"] for m in r["matches"]
    }
    print("HTTPRoute routes:", routes)
    edge = edge_service(full_release)
    http_port = next(p["port"] for p in edge["spec"]["ports"] if p["name"] == "http")
    assert routes == {"/ws/": (edge["metadata"]["name"], http_port), "/": ("chat-web", 8000)}


def test_without_an_app_service_only_the_websocket_paths_are_routed() -> None:
    release = render_chart(
        {"edge": {"ingress": {"enabled": True}, "httpRoute": {"enabled": True}}}
    )
    ingress_paths = [p["path"] for p in release.one("Ingress")["spec"]["rules"][0]["http"]["paths"]]
    route_paths = [
        m["path"]["value"] for r in release.one("HTTPRoute")["spec"]["rules"] for m in r["matches"]
    ]
    assert ingress_paths == route_paths == ["/ws/"]
    schemas.validate(release.one("HTTPRoute"))


def test_defaults_have_no_route(default_release: Release) -> None:
    assert not default_release.all("HTTPRoute")


def test_the_schema_check_refuses_a_broken_route(full_release: Release) -> None:
    import copy

    route = copy.deepcopy(full_release.one("HTTPRoute"))
    route["spec"]["rules"][0]["backendRefs"][0]["port"] = "http"  # must be a number
    with pytest.raises(AssertionError, match="backend port 'http'"):
        schemas.validate(route)
