"""Origin checking: refuses cross-site websocket handshakes with HTTP 403.

Browsers send ``Origin`` on every websocket handshake and let any page open a socket to
any host, so without this check a hostile page could act with a visitor's session
cookie. Allowed origins come from ``WEBSOCKET_ALLOWED_ORIGINS`` (full origins such as
``"https://chat.example.com"``, host patterns as in ALLOWED_HOSTS, or ``"*"``), or when
that is unset from ``ALLOWED_HOSTS`` (Channels' ``AllowedHostsOriginValidator``). A
handshake without ``Origin`` comes from a non-browser client and is allowed only when
``"*"`` is listed, as in Channels.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.http import is_same_domain

from django_ws_client import conf
from django_ws_client.exceptions import DenyConnection
from django_ws_client.middlewares.base import BaseMiddleware, Scope

if TYPE_CHECKING:
    from django_ws_client.connection import ConnectionPort


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def allowed_patterns() -> list[str]:
    origins = conf.allowed_origins()
    if origins is not None:
        return origins
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def origin_allowed(origin: bytes | None, patterns: list[str]) -> bool:
    if "*" in patterns:
        return True
    if origin is None:
        return False
    try:
        text = origin.decode("ascii")
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        port = parts.port
    except (UnicodeDecodeError, ValueError):
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    if ":" in host:
        host = f"[{host}]"
    for pattern in patterns:
        if "://" in pattern:
            if text.rstrip("/").lower() == pattern.rstrip("/").lower():
                return True
        elif is_same_domain(host, pattern.lower()) or (
            port is not None and is_same_domain(f"{host}:{port}", pattern.lower())
        ):
            return True
    return False


class OriginMiddleware(BaseMiddleware):
    def __call__(self, scope: Scope, port: ConnectionPort) -> Awaitable[None]:
        if not origin_allowed(header(scope, b"origin"), allowed_patterns()):
            raise DenyConnection("origin not allowed")
        return self.inner(scope, port)
