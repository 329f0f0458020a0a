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
        # Batches of (when to ping, connections), due times ascending: every batch is
        # added as "now + interval" with a clock that never goes back. A connection that
        # opens within RESOLUTION of the last batch's time joins it, and the connections
        # pinged together come back as one batch, so an idle connection costs the
        # schedule a list slot, not a tuple and a float of its own. Connections are held
        # by weak reference: a closed one is freed at once, not at its next turn
        # (websockets cancels its keepalive task when the connection is lost, for the
        # same reason).
        self._pings: deque[tuple[float, list[weakref.ref[Pinged]]]] = deque()
        # Batches of (when the pongs are due, connections, their ping payloads).
        self._pongs: deque[tuple[float, list[weakref.ref[Pinged]], list[bytes]]] = deque()
        self._count = 0
        self.pings_sent = 0
        self.timeouts = 0

    def __len__(self) -> int:
        """Connections waiting for their next ping."""
        return self._count

    def add(self, connection: Pinged, now: float) -> None:
        """A connection opened: its first ping is due one interval from now."""
        due = now + self.interval
        pings = self._pings
        if pings and due - pings[-1][0] <= RESOLUTION:
            pings[-1][1].append(weakref.ref(connection))
        else:
            pings.append((due, [weakref.ref(connection)]))
        self._count += 1

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
            _, refs, payloads = pongs.popleft()
            for ref, payload in zip(refs, payloads, strict=True):
                connection = ref()
                if connection is not None and connection.awaits_pong(payload):
                    self.timeouts += 1
                    try:
                        connection.fail_keepalive()
                    except Exception:
                        logger.exception("closing a connection for a late pong failed")
        pings = self._pings
        timeout = self.timeout
        again: list[weakref.ref[Pinged]] = []
        sent_payloads: list[bytes] = []
        while pings and pings[0][0] <= now:
            _, refs = pings.popleft()
            for ref in refs:
                connection = ref()
                if connection is None:
                    self._count -= 1
                    continue  # freed
                try:
                    sent = connection.send_keepalive_ping()
                except Exception:
                    # One connection's failure must not end keepalive for the others
                    # of its batch: it alone leaves the schedule.
                    logger.exception("keepalive ping failed")
                    sent = None
                if sent is None:
                    self._count -= 1
                    continue  # closed: it leaves the schedule
                self.pings_sent += 1
                again.append(ref)
                if timeout is not None:
                    sent_payloads.append(sent)
        if again:
            pings.append((now + self.interval, again))
            if timeout is not None:
                # A copy: connections that open soon may join the ping batch.
                pongs.append((now + timeout, again.copy(), sent_payloads))


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
            # run_due keeps one connection's failure from the others; whatever else
            # fails must not end keepalive for the whole worker.
            logger.exception("keepalive schedule failed")
        due = schedule.next_due()
        wait = schedule.interval if due is None else due - now
        await asyncio.sleep(max(RESOLUTION, wait))
