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


CHANNELS_IN_MEMORY = "channels.layers.InMemoryChannelLayer"
CHANNELS_REDIS = frozenset(
    {"channels_redis.core.RedisChannelLayer", "channels_redis.pubsub.RedisPubSubChannelLayer"}
)
DROP_IN_LAYER = "django_ws_client.layers.GRPCChannelLayer"
"""The CHANNEL_LAYERS backend of Channels projects on our brokers: django-ws processes
of the same project (websockets_server, views) read its CONFIG as the gRPC layer's."""


def carried_config_keys() -> frozenset[str]:
    """The CONFIG keys of a Channels layer kept here: those django-ws reads (Channels'
    ``capacity``, ``expiry`` and ``group_expiry`` among them); others are dropped and
    reported by check ``django_ws.W003``."""
    from django_ws_client.transport.config import CONFIG_KEYS

    return CONFIG_KEYS


def transport_backends() -> dict[str, dict[str, Any]]:
    """``WEBSOCKET_TRANSPORT_BACKENDS``; when unset, a carried-over ``CHANNEL_LAYERS``
    read as its django-ws equivalent; when neither is set, the embedded broker."""
    explicit = getattr(settings, "WEBSOCKET_TRANSPORT_BACKENDS", None)
    if explicit is not None:
        return explicit  # type: ignore[no-any-return]
    carried = getattr(settings, "CHANNEL_LAYERS", None)
    if isinstance(carried, dict) and carried:
        return {alias: from_channel_layer(entry) for alias, entry in carried.items()}
    return DEFAULT_TRANSPORT_BACKENDS


def from_channel_layer(entry: Any) -> Any:
    """One ``CHANNEL_LAYERS`` entry as a transport backend entry: Channels' in-memory
    layer becomes ours (in-process in tests, the embedded broker elsewhere), a
    channels_redis layer becomes the gRPC layer (the embedded broker unless brokers are
    configured), and so does the drop-in layer (same brokers: edges and Channels servers
    share groups). Anything else is kept as written, for the checks to name."""
    if not isinstance(entry, dict) or "BACKEND" not in entry:
        return entry
    backend = entry["BACKEND"]
    config = entry.get("CONFIG") or {}
    kept = (
        {k: v for k, v in config.items() if k in carried_config_keys()}
        if isinstance(config, dict)
        else config
    )
    if backend == CHANNELS_IN_MEMORY:
        return {"BACKEND": "django_ws_client.transport.InMemoryChannelLayer", "CONFIG": kept}
    if backend in CHANNELS_REDIS or backend == DROP_IN_LAYER:
        return {"BACKEND": "django_ws_client.transport.GRPCTransportLayer", "CONFIG": kept}
    return entry


def allowed_origins() -> list[str] | None:
    """``WEBSOCKET_ALLOWED_ORIGINS``: explicit origins; None means use ALLOWED_HOSTS."""
    value = getattr(settings, "WEBSOCKET_ALLOWED_ORIGINS", None)
    return None if value is None else list(value)


def server_option(name: str, default: Any) -> Any:
    """A value from ``WEBSOCKET_SERVER`` (limits and timeouts of the edge)."""
    return getattr(settings, "WEBSOCKET_SERVER", {}).get(name, default)


def user_groups_enabled() -> bool:
    """``WEBSOCKET_USER_GROUPS`` (default True): authenticated consumers join their
    user's group, so ``user_send()`` reaches every connection of that user."""
    return bool(getattr(settings, "WEBSOCKET_USER_GROUPS", True))
