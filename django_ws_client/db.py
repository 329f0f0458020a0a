"""``database_sync_to_async``: run ORM code from a consumer without blocking the loop.

As in Channels, stale database connections are closed before and after the call, so a
long-lived websocket worker never holds a connection the database has dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import SyncToAsync
from django.db import close_old_connections


class DatabaseSyncToAsync(SyncToAsync[..., Any]):
    """``sync_to_async`` that cleans up old database connections around the call."""

    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return super().thread_handler(loop, *args, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            close_old_connections()


def database_sync_to_async(func: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """Wrap a sync function that uses the ORM so that it can be awaited.

    Usable bare (``database_sync_to_async(fn)``) or as a decorator with or without
    arguments (``thread_sensitive``), like Channels'.
    """
    if func is None:
        return lambda f: DatabaseSyncToAsync(f, **kwargs)
    return DatabaseSyncToAsync(func, **kwargs)
