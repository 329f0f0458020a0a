"""Finding the consumer for a path in ``WEBSOCKET_ROUTE_MODULE``'s ``urlpatterns``.

Routes are ordinary Django ``re_path`` / ``path`` / ``include`` entries, resolved by
Django's own resolver. Patterns may be written with a leading slash (the seed's
``r'/ws/chat/?$'``) or without (Channels' ``r'ws/chat/(?P<room>\\w+)/$'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.urls import Resolver404, URLPattern, URLResolver


@dataclass(frozen=True)
class RouteMatch:
    handler: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def load_urlpatterns(module_path: str) -> list[URLPattern | URLResolver]:
    """The module's ``urlpatterns``, or Channels' ``websocket_urlpatterns`` (so a
    Channels ``routing.py`` is used as it is)."""
    module = import_module(module_path)
    patterns = getattr(module, "urlpatterns", None)
    if patterns is None:
        patterns = getattr(module, "websocket_urlpatterns", None)
    if patterns is None:
        raise ImportError(
            f"route module {module_path!r} has no 'urlpatterns' (or 'websocket_urlpatterns')"
        )
    return list(patterns)


def resolve(patterns: list[URLPattern | URLResolver], path: str) -> RouteMatch | None:
    """The first route matching ``path`` (tried with and without its leading slash)."""
    candidates = [path, path.lstrip("/")] if path.startswith("/") else [path]
    for pattern in patterns:
        for candidate in candidates:
            try:
                match = pattern.resolve(candidate)
            except Resolver404:
                continue
            if match:
                return RouteMatch(match.func, tuple(match.args), dict(match.kwargs))
    return None


class URLRouter:
    """Channels' ``URLRouter``: an application that picks a consumer by path.

    The server routes with ``WEBSOCKET_ROUTE_MODULE``; this is for code that builds its
    application by hand, as Channels' tests do
    (``WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/x/")``). As in
    Channels, a path no route matches raises ``ValueError``.
    """

    def __init__(self, routes: list[URLPattern | URLResolver]) -> None:
        self.routes = list(routes)

    def __call__(self, scope: dict[str, Any], port: Any) -> Any:
        match = resolve(self.routes, scope["path"])
        if match is None:
            raise ValueError(f"No route found for path {scope['path']!r}.")
        scope["url_route"] = {"args": match.args, "kwargs": match.kwargs}
        return match.handler(scope, port)
