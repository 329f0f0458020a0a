"""Channels' ``CookieMiddleware``: ``scope["cookies"]`` from the Cookie header."""

from django_ws_client.middlewares.scope import ScopeMiddleware as CookieMiddleware

__all__ = ["CookieMiddleware"]
