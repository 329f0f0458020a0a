"""The middleware base class and the code that assembles a stack from settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

from django_ws_client.exceptions import InvalidChannelLayerError

if TYPE_CHECKING:
    from django_ws_client.connection import ConnectionPort

Scope = dict[str, Any]
App = Callable[[Scope, "ConnectionPort"], Awaitable[None]]


class BaseMiddleware:
    """Subclass and override ``__call__``; always await ``self.inner`` to go on."""

    def __init__(self, inner: App) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, port: ConnectionPort) -> None:
        return await self.inner(scope, port)


async def dispatch_to_route(scope: Scope, port: ConnectionPort) -> None:
    """The innermost app: runs the consumer handler that routing chose."""
    handler = scope.get("route_handler")
    if handler is None:
        raise InvalidChannelLayerError(
            "no consumer was chosen for this connection: WEBSOCKET_MIDDLEWARE must end "
            "with 'django_ws_client.middlewares.route.RouteMiddleware'"
        )
    await handler(scope, port)


def build_stack(paths: list[str], inner: App = dispatch_to_route) -> App:
    """Build the stack: the first path is the outermost middleware."""
    app = inner
    for path in reversed(paths):
        # The seed's package name keeps working.
        cls = import_string(path.replace("django_websockets.", "django_ws_client."))
        app = cls(app)
    return app
