"""The one private name of asyncio that django-ws relies on, in one place.

With eager handlers (``WEBSOCKET_SERVER['EAGER_TASKS']``), a channel layer event that
finds its consumer idle runs the handler's first step where the event arrives, without a
task of its own (:class:`django_ws_client.connection.ConnectionPort`). For that step to
run as the consumer, ``asyncio.current_task()`` must be the consumer's task while it runs:
``asyncio.timeout`` and cancellation then act on the task that goes on with the handler,
and the loop watchdog names the consumer, as when the consumer's task runs the handler
itself (as Channels always does).

asyncio does exactly this for its own eager tasks, with ``asyncio.tasks._swap_current_task``
(Python 3.12+, in C and in Python), which is not public. It is named here only;
:func:`swap_current_task` is ``None`` where it is missing, and handlers then always run in
the consumer's task. ``tests/client/test_asyncio_internals.py`` checks that it still does
what the connection relies on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

SwapCurrentTask = Callable[[asyncio.AbstractEventLoop, "asyncio.Task[Any] | None"], Any]

swap_current_task: SwapCurrentTask | None = getattr(asyncio.tasks, "_swap_current_task", None)
"""``swap_current_task(loop, task)`` makes ``task`` the loop's current task (``None``: no
task) and returns the one it replaces."""
