"""``scope["user"]``: the user of the Django session, ``AnonymousUser`` otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django_ws_client.auth import get_user
from django_ws_client.middlewares.base import BaseMiddleware, Scope
from django_ws_client.middlewares.session import session_from_scope

if TYPE_CHECKING:
    from django_ws_client.connection import ConnectionPort


class AuthMiddleware(BaseMiddleware):
    """Loads the session itself when no SessionMiddleware ran before it (the seed's
    stack lists only scope, auth and route)."""

    async def __call__(self, scope: Scope, port: ConnectionPort) -> None:
        if "session" not in scope:
            scope["session"] = session_from_scope(scope)
        if "user" not in scope:
            scope["user"] = await get_user(scope)
        return await self.inner(scope, port)
