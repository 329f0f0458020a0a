"""Chooses the consumer for the path; an unknown path is answered with HTTP 404."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from django_ws_client import conf
from django_ws_client.exceptions import HandshakeRejected, InvalidChannelLayerError
from django_ws_client.middlewares.base import App, BaseMiddleware, Scope
from django_ws_client.routing import load_urlpatterns, resolve

if TYPE_CHECKING:
    from django_ws_client.connection import ConnectionPort


class RouteMiddleware(BaseMiddleware):
    """Fills ``scope["url_route"]`` with the match's ``args`` and ``kwargs``."""

    def __init__(self, inner: App) -> None:
        super().__init__(inner)
        module = conf.route_module()
        if not module:
            raise InvalidChannelLayerError(
                "WEBSOCKET_ROUTE_MODULE is not set: name the module whose 'urlpatterns' "
                "route websocket paths to consumers"
            )
        self.patterns = load_urlpatterns(module)

    def __call__(self, scope: Scope, port: ConnectionPort) -> Awaitable[None]:
        match = resolve(self.patterns, scope["path"])
        if match is None:
            raise HandshakeRejected(404, "no websocket route matches this path")
        scope["url_route"] = {"args": match.args, "kwargs": match.kwargs}
        scope["route_handler"] = match.handler
        return self.inner(scope, port)
