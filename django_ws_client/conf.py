"""The settings django-ws reads, with their defaults.

Every setting keeps the seed's name. Values are read when they are needed (so tests can
override them) and validated by the system checks in :mod:`django_ws_client.checks`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULT_MIDDLEWARE = [
    "django_ws_client.middlewares.scope.ScopeMiddleware",
    "django_ws_client.middlewares.origin.OriginMiddleware",
    "django_ws_client.middlewares.session.SessionMiddleware",
    "django_ws_client.middlewares.auth.AuthMiddleware",
    "django_ws_client.middlewares.route.RouteMiddleware",
]
"""Origin and auth checks are on unless a project lists its own stack."""

DEFAULT_TRANSPORT_BACKENDS: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django_ws_client.transport.GRPCTransportLayer", "CONFIG": {}},
}


def middleware_paths() -> list[str]:
    return list(getattr(settings, "WEBSOCKET_MIDDLEWARE", DEFAULT_MIDDLEWARE))


def route_module() -> str | None:
    return getattr(settings, "WEBSOCKET_ROUTE_MODULE", None)


def transport_backends() -> dict[str, dict[str, Any]]:
    return getattr(settings, "WEBSOCKET_TRANSPORT_BACKENDS", DEFAULT_TRANSPORT_BACKENDS)


def allowed_origins() -> list[str] | None:
    """``WEBSOCKET_ALLOWED_ORIGINS``: explicit origins; None means use ALLOWED_HOSTS."""
    value = getattr(settings, "WEBSOCKET_ALLOWED_ORIGINS", None)
    return None if value is None else list(value)


def server_option(name: str, default: Any) -> Any:
    """A value from ``WEBSOCKET_SERVER`` (limits and timeouts of the edge)."""
    return getattr(settings, "WEBSOCKET_SERVER", {}).get(name, default)
