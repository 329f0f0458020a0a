"""Keepalive pings for every connection of a worker, on one schedule.

websockets gives each connection a keepalive task that sleeps ``ping_interval``, pings,
and waits ``ping_timeout`` for the pong. Each of those tasks holds a coroutine frame, a
sleep future and a timer for as long as its connection lives: about 1.4 KiB per idle
connection, a tenth of what an idle connection costs the worker. The same rule needs no
task per connection: connections join a queue in the order they opened, so with one
interval for all of them the queue is always in the order their pings fall due, and one
worker-wide task pings whoever is due and closes whoever let a pong wait too long.

:class:`KeepaliveSchedule` is that rule with no sockets and no event loop: it is handed
the time and calls the connection's own ``send_keepalive_ping`` and
``fail_keepalive``. :func:`run_keepalive` is the task that drives it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from typing import Protocol

logger = logging.getLogger("django_ws.edge")


class Pinged(Protocol):
    """What the schedule needs of a connection (the edge's connection class is one)."""

    def send_keepalive_ping(self) -> bytes | None:
        """Send a ping now; its payload, or None when the connection is no longer open
        (the schedule then forgets it)."""
        ...

    def awaits_pong(self, payload: bytes) -> bool:
        """Whether the pong for ``payload`` has not come yet, on a connection still open."""
        ...

    def fail_keepalive(self) -> None:
        """Close the connection: a pong did not come within ``ping_timeout``."""
        ...


class KeepaliveSchedule:
    """When each connection is pinged next, and when each ping's pong is due.

    With ``timeout`` None, pings are sent and nothing waits for their pongs, as with
    websockets' ``ping_timeout=None``.
    """

    def __init__(self, interval: float, timeout: float | None) -> None:
        if interval <= 0:
            raise ValueError(f"the ping interval must be positive, not {interval!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"the ping timeout must be positive or None, not {timeout!r}")
        self.interval = interval
        self.timeout = timeout
        # (when to ping, connection), due times ascending: every entry is added as
        # "now + interval" with a clock that never goes back. Connections are held by
        # weak reference: a closed one is freed at once, not at its next turn (websockets
        # cancels its keepalive task when the connection is lost, for the same reason).
        self._pings: deque[tuple[float, weakref.ref[Pinged]]] = deque()
        # (when the pong is due, connection, ping payload), ascending likewise.
        self._pongs: deque[tuple[float, weakref.ref[Pinged], bytes]] = deque()
        self.pings_sent = 0
        self.timeouts = 0

    def __len__(self) -> int:
        """Connections waiting for their next ping."""
        return len(self._pings)

    def add(self, connection: Pinged, now: float) -> None:
        """A connection opened: its first ping is due one interval from now."""
        self._pings.append((now + self.interval, weakref.ref(connection)))

    def next_due(self) -> float | None:
        """When :meth:`run_due` next has something to do (None: nothing scheduled)."""
        due = [queue[0][0] for queue in (self._pings, self._pongs) if queue]
        return min(due) if due else None

    def run_due(self, now: float) -> None:
        """Close the connections whose pong is overdue, then ping those whose turn it is.

        Pongs are checked first, so a connection is never pinged again while an earlier
        ping of it went unanswered past the timeout.
        """
        pongs = self._pongs
        while pongs and pongs[0][0] <= now:
            _, ref, payload = pongs.popleft()
            connection = ref()
            if connection is not None and connection.awaits_pong(payload):
                self.timeouts += 1
                connection.fail_keepalive()
        pings = self._pings
        interval, timeout = self.interval, self.timeout
        while pings and pings[0][0] <= now:
            _, ref = pings.popleft()
            connection = ref()
            if connection is None:
                continue  # freed
            sent = connection.send_keepalive_ping()
            if sent is None:
                continue  # closed: it leaves the schedule
            self.pings_sent += 1
            pings.append((now + interval, ref))
            if timeout is not None:
                pongs.append((now + timeout, ref, sent))


RESOLUTION = 0.05
"""The least time the keepalive task sleeps: pings due within it go out together."""


async def run_keepalive(schedule: KeepaliveSchedule) -> None:
    """Drive ``schedule`` on the running loop until cancelled: sleep until something is
    due, then do it. A connection added meanwhile is due later than every one already
    scheduled, and one interval after an empty schedule's sleep began at the earliest,
    so it never needs an earlier wake-up."""
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time()
        try:
            schedule.run_due(now)
        except Exception:
            # One connection's failure must not end keepalive for all the others (it
            # left the schedule when its entry was taken).
            logger.exception("keepalive ping failed")
        due = schedule.next_due()
        wait = schedule.interval if due is None else due - now
        await asyncio.sleep(max(RESOLUTION, wait))
