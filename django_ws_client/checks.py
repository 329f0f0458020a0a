"""System checks: misconfiguration is reported at start-up with an id and a hint.

| id | what |
| --- | --- |
| django_ws.E001 | a transport backend's BACKEND path does not import |
| django_ws.E002 | a transport backend's CONFIG is invalid (bad broker address, shards, ...) |
| django_ws.E003 | WEBSOCKET_ROUTE_MODULE is missing, does not import or has no urlpatterns |
| django_ws.E004 | a WEBSOCKET_MIDDLEWARE entry does not import |
| django_ws.E005 | WEBSOCKET_SERVER has an unknown key or a bad value |
| django_ws.W001 | origin checking is not in WEBSOCKET_MIDDLEWARE |
"""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Warning, register
from django.utils.module_loading import import_string

from django_ws_client import conf
from django_ws_client.exceptions import InvalidChannelLayerError

TAG = "django_ws"

SERVER_KEYS = {
    "MAX_MESSAGE_BYTES",
    "HANDSHAKE_TIMEOUT",
    "MAX_CONNECTIONS",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "CLOSE_TIMEOUT",
    "WRITE_LIMIT",
    "COMPRESSION",
    "GRACE_SECONDS",
    "HEALTH_BIND",
    "RATE_LIMIT",
    "RATE_BURST",
    "BLOCKED_LOOP_WARNING",
    "MAX_HEADER_LINE",
    "MAX_HEADERS",
    "SOCKET_SEND_BUFFER",
    "MAX_WRITE_BUFFER",
    "SLOW_CLIENT_BYTES",
    "SLOW_CLIENT_SECONDS",
    "WORKER_BUFFER_BYTES",
    "HEARTBEAT_TIMEOUT",
    "WEDGED_TIMEOUT",
}


@register(TAG)
def check_transport(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from django_ws_client.transport import backend_settings, layer_config

    errors: list[Error] = []
    backends = conf.transport_backends()
    if not isinstance(backends, dict) or not backends:
        return [
            Error(
                "WEBSOCKET_TRANSPORT_BACKENDS must be a non-empty dict of aliases",
                hint="e.g. {'default': {'BACKEND': "
                "'django_ws_client.transport.GRPCTransportLayer', "
                "'CONFIG': {}}}",
                id="django_ws.E002",
            )
        ]
    for alias in backends:
        try:
            path = backend_settings(alias)["BACKEND"].replace(
                "gGPCTransportLayer", "GRPCTransportLayer"
            )
            import_string(path.replace("django_websockets.", "django_ws_client."))
        except InvalidChannelLayerError as exc:
            errors.append(Error(str(exc), id="django_ws.E001"))
            continue
        except ImportError as exc:
            errors.append(
                Error(
                    f"WEBSOCKET_TRANSPORT_BACKENDS[{alias!r}]['BACKEND'] = {path!r} does not "
                    f"import: {exc}",
                    hint="use 'django_ws_client.transport.GRPCTransportLayer'",
                    id="django_ws.E001",
                )
            )
            continue
        try:
            layer_config(alias)
        except InvalidChannelLayerError as exc:
            errors.append(Error(str(exc), id="django_ws.E002"))
    return errors


@register(TAG)
def check_routes(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from django_ws_client.routing import load_urlpatterns

    module = conf.route_module()
    if not module:
        return [
            Error(
                "WEBSOCKET_ROUTE_MODULE is not set",
                hint="name the module whose 'urlpatterns' route websocket paths, "
                "e.g. 'my_project.routing'",
                id="django_ws.E003",
            )
        ]
    try:
        load_urlpatterns(module)
    except Exception as exc:
        return [
            Error(f"WEBSOCKET_ROUTE_MODULE {module!r} cannot be loaded: {exc}", id="django_ws.E003")
        ]
    return []


@register(TAG)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    results: list[Error | Warning] = []
    paths = conf.middleware_paths()
    for path in paths:
        try:
            import_string(path.replace("django_websockets.", "django_ws_client."))
        except ImportError as exc:
            results.append(
                Error(
                    f"WEBSOCKET_MIDDLEWARE entry {path!r} does not import: {exc}",
                    id="django_ws.E004",
                )
            )
    if not any(p.endswith("origin.OriginMiddleware") for p in paths):
        results.append(
            Warning(
                "WEBSOCKET_MIDDLEWARE has no origin check: any web page can open websockets "
                "to this server with its visitors' cookies",
                hint="add 'django_ws_client.middlewares.origin.OriginMiddleware'",
                id="django_ws.W001",
            )
        )
    return results


@register(TAG)
def check_server(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from django.conf import settings

    server = getattr(settings, "WEBSOCKET_SERVER", {})
    if not isinstance(server, dict):
        return [Error("WEBSOCKET_SERVER must be a dict", id="django_ws.E005")]
    unknown = sorted(set(server) - SERVER_KEYS)
    if unknown:
        return [
            Error(
                f"WEBSOCKET_SERVER has unknown keys {unknown}",
                hint=f"known keys: {sorted(SERVER_KEYS)}",
                id="django_ws.E005",
            )
        ]
    return []
