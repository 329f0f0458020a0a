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
    module = import_module(module_path)
    patterns = getattr(module, "urlpatterns", None)
    if patterns is None:
        raise ImportError(f"route module {module_path!r} has no 'urlpatterns'")
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
