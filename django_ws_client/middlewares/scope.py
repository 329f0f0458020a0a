"""Fills the Channels-style scope keys derived from the request: ``cookies``."""

from __future__ import annotations

from collections.abc import Awaitable
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING

from django_ws_client.middlewares.base import BaseMiddleware, Scope

if TYPE_CHECKING:
    from django_ws_client.connection import ConnectionPort


def parse_cookies(scope: Scope) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed cookie header is ignored, as browsers do
                continue
            cookies.update({key: morsel.value for key, morsel in jar.items()})
    return cookies


class ScopeMiddleware(BaseMiddleware):
    """The seed's first middleware: completes the scope the server built."""

    def __call__(self, scope: Scope, port: ConnectionPort) -> Awaitable[None]:
        # Not a coroutine: returning the inner app's awaitable keeps this frame off
        # the stack for the connection's whole life (see BaseMiddleware).
        if "cookies" not in scope:
            scope["cookies"] = parse_cookies(scope)
        return self.inner(scope, port)
