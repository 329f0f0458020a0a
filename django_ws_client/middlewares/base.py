"""The middleware base class and the code that assembles a stack from settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from django_ws_client.exceptions import InvalidChannelLayerError
from django_ws_client.seed_paths import import_path

if TYPE_CHECKING:
    from django_ws_client.connection import ConnectionPort

Scope = dict[str, Any]
App = Callable[[Scope, "ConnectionPort"], Awaitable[None]]


class BaseMiddleware:
    """Subclass and override ``__call__`` (async, as in Channels); always await
    ``self.inner`` to go on.

    A middleware that only looks at the scope before the consumer runs may instead be
    a plain method that returns ``self.inner(scope, port)`` without awaiting it, as the
    built-in scope, origin and route middlewares do: a coroutine that awaits its inner
    app stays on the stack, holding its frame, for as long as the connection lives,
    which across thousands of idle connections is memory for nothing.
    """

    def __init__(self, inner: App) -> None:
        self.inner = inner

    def __call__(self, scope: Scope, port: ConnectionPort) -> Awaitable[None]:
        return self.inner(scope, port)


def dispatch_to_route(scope: Scope, port: ConnectionPort) -> Awaitable[None]:
    """The innermost app: runs the consumer handler that routing chose."""
    handler = scope.get("route_handler")
    if handler is None:
        raise InvalidChannelLayerError(
            "no consumer was chosen for this connection: WEBSOCKET_MIDDLEWARE must end "
            "with 'django_ws_client.middlewares.route.RouteMiddleware'"
        )
    result: Awaitable[None] = handler(scope, port)
    return result


def build_stack(paths: list[str], inner: App = dispatch_to_route) -> App:
    """Build the stack: the first path is the outermost middleware."""
    app = inner
    for path in reversed(paths):
        cls = import_path(path)
        app = cls(app)
    return app
