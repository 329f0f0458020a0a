"""How a worker process runs: the open file limit, eager tasks, and the log line that
says which event loop, task factory and file limit it got.

Every connection is a file descriptor, so a worker can hold no more connections than
its soft ``RLIMIT_NOFILE`` allows; many systems start processes with a soft limit of
1,024 under a hard one far above. The worker raises its soft limit to the hard one at
start, as most servers do, and warns when ``MAX_CONNECTIONS`` is still above it.

Eager tasks (Python 3.12+, ``asyncio.eager_task_factory``) run a new task's first step
at once, inside ``create_task``, instead of on a later turn of the loop: a task that
finishes without waiting costs no scheduling at all. ``WEBSOCKET_SERVER['EAGER_TASKS']``
installs that factory in the workers; on 3.11 it is a no-op, said in the log.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger("django_ws.edge")

FILE_DESCRIPTORS_RESERVED = 200
"""Descriptors a worker keeps for what is not a client connection: its listening
socket, broker links, pipes, metrics files, log files, the database."""


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns (soft, hard) after.
    Where the limit cannot be read or raised (not Unix), returns what it can read."""
    try:
        import resource
    except ImportError:  # not Unix: no such limit to raise
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open file limit from %d to %d: %s", soft, hard, exc)
    return soft, hard


def connections_allowed_by(soft_limit: int) -> int:
    """How many client connections one worker can hold under ``soft_limit`` files."""
    return max(0, soft_limit - FILE_DESCRIPTORS_RESERVED)


def eager_task_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    /,
    *,
    eager_start: bool = True,
    **kwargs: Any,
) -> asyncio.Task[T]:
    """``asyncio.eager_task_factory``, also on uvloop: uvloop (0.22 and later) hands the
    factory an ``eager_start`` keyword, which the standard factory of Python 3.12 and
    3.13 does not take (every task creation then fails). A task asked for explicitly
    not to start eagerly is not."""
    task_class: Any = asyncio.Task  # eager_start: 3.12+, unknown to 3.11's stubs
    task: asyncio.Task[T] = task_class(coro, loop=loop, eager_start=eager_start, **kwargs)
    return task


def install_eager_tasks(loop: asyncio.AbstractEventLoop, wanted: bool) -> str:
    """Install the eager task factory on ``loop`` when ``wanted`` and the Python has
    eager tasks (3.12+); returns what the log line says: "on", "off" or why it is off."""
    if not wanted:
        return "off"
    if not hasattr(asyncio, "eager_task_factory"):
        version = ".".join(map(str, sys.version_info[:2]))
        return (
            f"off (WEBSOCKET_SERVER['EAGER_TASKS'] is set, but Python {version} has no "
            "eager tasks: they need 3.12 or later)"
        )
    factory: Any = eager_task_factory  # takes more keywords than the stubs' protocol
    loop.set_task_factory(factory)
    return "on"


def eager_tasks_running(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` creates tasks eagerly (:func:`install_eager_tasks` ran there)."""
    return loop.get_task_factory() is eager_task_factory
