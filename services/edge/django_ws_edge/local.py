"""This worker's own channels: the connections it serves and the receive queues of
``new_channel()``, and handing one event to one of them.

A consumer whose client does not keep up is closed as too slow here: its backlog
passed its own bound (``SLOW_CLIENT_BYTES``), the worker's (``WORKER_BUFFER_BYTES``),
or a send to it made no progress for ``SLOW_CLIENT_SECONDS``. The registry knows a
connection only through :class:`LocalConsumer`, so it never imports the websocket side.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from django_ws_client.connection import BufferBudget, Position
from django_ws_edge import metrics


class LocalConsumer(Protocol):
    """What the registry needs of a connection (``EdgeConnection`` is one)."""

    channel_name: str
    slow_client_seconds: float
    max_pending_bytes: int
    pending_bytes: int

    def deliver(self, event: Any, size: int = 0, position: Position | None = None) -> bool:
        """Queue an event for the consumer; False once its backlog passed a bound."""
        ...

    def close_slow(self, why: str) -> None:
        """Close the client as too slow, dropping (and counting) what waits for it."""
        ...


class LocalChannels:
    """Channel name -> connection or receive queue, for the channels of this worker."""

    def __init__(self, capacity: int, tally: metrics.Tally) -> None:
        self.capacity = capacity
        self.tally = tally
        self.connections: dict[str, LocalConsumer] = {}
        self.queues: dict[str, asyncio.Queue[Any]] = {}
        # Connections whose consumer waits for its client's socket to drain, and since when.
        self.blocked_sends: dict[LocalConsumer, float] = {}
        self.budget: BufferBudget | None = None

    def holds(self, channel: str) -> bool:
        """Whether ``channel`` is a live connection or receive queue of this worker."""
        return channel in self.connections or channel in self.queues

    def register(self, connection: LocalConsumer) -> None:
        self.connections[connection.channel_name] = connection

    def forget(self, channel: str) -> None:
        self.connections.pop(channel, None)

    def new_queue(self, name: str) -> None:
        """A receive queue for a channel that code in this worker reads."""
        self.queues[name] = asyncio.Queue(maxsize=self.capacity)

    async def receive(self, channel: str) -> Any:
        queue = self.queues.get(channel)
        if queue is None:
            raise ValueError(
                f"{channel!r} was not made by new_channel() in this worker; consumers "
                "receive their events through their handlers"
            )
        return await queue.get()

    def deliver(
        self,
        channel: str,
        event: Any,
        size: int = 0,
        position: Position | None = None,
    ) -> bool:
        """Hand an event of ``size`` bytes to a local consumer or receive queue; False
        when a receive queue is full. A consumer whose client does not keep up is
        closed as too slow instead (its backlog passed its bound, or the worker's)."""
        connection = self.connections.get(channel)
        if connection is None:
            queue = self.queues.get(channel)
            if queue is None:
                return True  # gone: as in Channels, not the sender's error
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                metrics.QUEUE_DROPPED.inc()
                metrics.DELIVERIES_LOST.labels("receive_queue_full").inc()
                return False
            return True
        self.tally.deliveries += 1
        if connection.deliver(event, size, position):
            return True
        if connection.pending_bytes > connection.max_pending_bytes:
            connection.close_slow(
                f"{connection.pending_bytes} bytes of events wait for it "
                f"(SLOW_CLIENT_BYTES is {connection.max_pending_bytes})"
            )
        elif self.budget is not None:
            # The worker's budget is spent: the client furthest behind gives way.
            furthest = max(self.connections.values(), key=lambda c: c.pending_bytes)
            furthest.close_slow(
                f"{furthest.pending_bytes} bytes of events wait for it, the most of any "
                f"client, and this worker's {self.budget.used} bytes passed "
                f"WORKER_BUFFER_BYTES ({self.budget.limit})"
            )
        return True

    def close_stalled(self, now: float) -> None:
        """Close the clients a send has waited on for more than SLOW_CLIENT_SECONDS:
        their sockets took nothing in that time."""
        for connection, since in list(self.blocked_sends.items()):
            if now - since > connection.slow_client_seconds:
                del self.blocked_sends[connection]
                connection.close_slow(
                    f"a send made no progress for {connection.slow_client_seconds:g}s "
                    "(SLOW_CLIENT_SECONDS)"
                )
