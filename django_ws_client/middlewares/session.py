"""``scope["session"]``: the Django session named by the session cookie.

Changes are saved by the consumer (``await scope["session"].asave()``), as in Channels;
nothing is saved behind its back.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from django.conf import settings

from django_ws_client.middlewares.base import BaseMiddleware, Scope
from django_ws_client.middlewares.scope import parse_cookies

if TYPE_CHECKING:
    from django_ws_client.connection import ConnectionPort


def session_from_scope(scope: Scope) -> Any:
    if "cookies" not in scope:
        scope["cookies"] = parse_cookies(scope)
    engine = import_module(settings.SESSION_ENGINE)
    return engine.SessionStore(scope["cookies"].get(settings.SESSION_COOKIE_NAME))


class SessionMiddleware(BaseMiddleware):
    async def __call__(self, scope: Scope, port: ConnectionPort) -> None:
        if "session" not in scope:
            scope["session"] = session_from_scope(scope)
        return await self.inner(scope, port)
