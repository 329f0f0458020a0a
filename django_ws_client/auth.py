"""Channels' ``get_user``, ``login`` and ``logout`` for a websocket scope.

They are Django's own ``aget_user``, ``alogin`` and ``alogout`` run against a small
request stand-in built from the scope, so session-hash checks, signals and session key
rotation behave exactly as in Django views.
"""

from __future__ import annotations

from typing import Any

from django.contrib import auth

Scope = dict[str, Any]


class _ScopeRequest:
    """Just enough of an HttpRequest for Django's auth functions."""

    def __init__(self, scope: Scope) -> None:
        if "session" not in scope:
            raise ValueError(
                "no session in scope: add SessionMiddleware or AuthMiddleware to "
                "WEBSOCKET_MIDDLEWARE"
            )
        self.session = scope["session"]
        self.user = scope.get("user")
        self.META: dict[str, Any] = {}
        self.COOKIES = scope.get("cookies", {})
        self.method = "GET"
        self.path = scope.get("path", "")


async def get_user(scope: Scope) -> Any:
    """The user the scope's session belongs to, or ``AnonymousUser``."""
    return await auth.aget_user(_ScopeRequest(scope))


async def login(scope: Scope, user: Any, backend: str | None = None) -> None:
    """Log ``user`` in on this connection's session (save it with ``asave()``)."""
    request = _ScopeRequest(scope)
    await auth.alogin(request, user, backend=backend)
    scope["user"] = request.user


async def logout(scope: Scope) -> None:
    """Log the session's user out and make ``scope["user"]`` anonymous."""
    request = _ScopeRequest(scope)
    await auth.alogout(request)
    scope["user"] = request.user
