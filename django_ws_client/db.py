"""``database_sync_to_async``: run ORM code from a consumer without blocking the loop.

As in Channels, stale database connections are closed before and after the call, so a
long-lived websocket worker never holds a connection the database has dropped.

Except inside a test communicator: a Django ``TestCase`` holds its connection inside a
transaction for the whole test, and closing it there ("Cannot operate on a closed
database") would break every later query. Channels guards this by patching its
``close_old_connections`` while its communicator runs; here the communicator marks the
context its application runs in (:func:`keeping_connections`), so only code that the
communicator runs is spared, and nothing global is patched.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import SyncToAsync
from django.db import close_old_connections

_keep_connections: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "django_ws_keep_connections", default=False
)


@contextmanager
def keeping_connections() -> Iterator[None]:
    """Leave database connections open in this context and in tasks and threads
    started from it (how the test communicator protects a ``TestCase``'s transaction)."""
    token = _keep_connections.set(True)
    try:
        yield
    finally:
        _keep_connections.reset(token)


def _closing_connections(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``func`` to close stale connections around it. The wrapper runs inside the
    caller's copied context (asgiref runs it there), so it sees the communicator's mark."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        if _keep_connections.get():
            return func(*args, **kwargs)
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return run


class DatabaseSyncToAsync(SyncToAsync[..., Any]):
    """``sync_to_async`` that cleans up old database connections around the call."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(_closing_connections(func), *args, **kwargs)


def database_sync_to_async(func: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """Wrap a sync function that uses the ORM so that it can be awaited.

    Usable bare (``database_sync_to_async(fn)``) or as a decorator with or without
    arguments (``thread_sensitive``), like Channels'.
    """
    if func is None:
        return lambda f: DatabaseSyncToAsync(f, **kwargs)
    return DatabaseSyncToAsync(func, **kwargs)
