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


def install_eager_tasks(loop: asyncio.AbstractEventLoop, wanted: bool) -> str:
    """Install ``asyncio.eager_task_factory`` on ``loop`` when ``wanted`` and the Python
    has it; returns what the log line says: "on", "off" or why it is off."""
    if not wanted:
        return "off"
    factory = getattr(asyncio, "eager_task_factory", None)
    if factory is None:
        version = ".".join(map(str, sys.version_info[:2]))
        return (
            f"off (WEBSOCKET_SERVER['EAGER_TASKS'] is set, but Python {version} has no "
            "eager tasks: they need 3.12 or later)"
        )
    loop.set_task_factory(factory)
    return "on"
