"""Dotted paths written for the seed project keep working.

The seed's package was ``django_websockets`` and it spelled the gRPC layer
``gGPCTransportLayer``; settings that still name them (``BACKEND``,
``WEBSOCKET_MIDDLEWARE``) are read as the current names, in one place, so the layer, the
middleware stack and the system checks agree on what a path means.
"""

from __future__ import annotations

from typing import Any

SEED_PACKAGE = "django_websockets."
PACKAGE = "django_ws_client."
SEED_CLASS_NAMES = {"gGPCTransportLayer": "GRPCTransportLayer"}


def current_path(path: str) -> str:
    """``path`` with the seed's package and class names replaced by today's."""
    for old, new in SEED_CLASS_NAMES.items():
        path = path.replace(old, new)
    return path.replace(SEED_PACKAGE, PACKAGE)


def import_path(path: str) -> Any:
    """Import what ``path`` names, reading the seed's names as today's."""
    from django.utils.module_loading import import_string

    return import_string(current_path(path))
