"""What a consumer talks to: one websocket connection as the server sees it.

The edge server and the in-process test communicator each implement a
:class:`ConnectionPort`; the consumer never knows which. The port owns the rules that
must hold whoever serves the connection: handlers run one at a time in arrival order
(as in Channels), a handler that raises closes the connection with 1011, ``disconnect``
runs exactly once for an accepted connection, and the connection always leaves its
groups at the end.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from django_ws_client.exceptions import StopConsumer
from django_ws_client.tracing import span, tracing_enabled

if TYPE_CHECKING:
    from django_ws_client.transport.base import ChannelLayer

logger = logging.getLogger("django_ws.consumer")

Event = Any  # a dict event or a GroupMessage


class CloseCode:
    """Close codes django-ws sends, by why it sends them."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    POLICY = 1008  # rate limit, policy
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011  # a consumer raised
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013  # slow consumer: its queue overflowed


class ConnectionPort(ABC):
    """One connection: handshake decision, outgoing frames and the consumer's inbox."""

    def __init__(self, *, channel_name: str, layer: ChannelLayer, capacity: int) -> None:
        self.channel_name = channel_name
        self.layer = layer
        self.capacity = capacity
        self.expiry = layer.expiry
        self.expired = 0
        self.accepted = False
        self.rejected = False
        self.close_requested = False
        # (arrival time, event): events older than the layer's ``expiry`` are dropped,
        # as Channels drops messages nobody consumed in time. A list, not a deque: it
        # holds at most ``capacity`` events, and an empty deque keeps a block of 64
        # slots, which thousands of idle connections would pay for.
        self._inbox: list[tuple[float, Event]] = []
        self._waiter: asyncio.Future[None] | None = None
        self._resume: Callable[[], None] | None = None
        self._disconnect_queued = False

    @property
    def decided(self) -> bool:
        """Whether the handshake has been accepted or rejected."""
        return self.accepted or self.rejected

    # What servers implement ------------------------------------------------------------

    @abstractmethod
    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Complete the handshake, choosing ``subprotocol`` and adding ``headers``."""

    @abstractmethod
    async def send(self, data: str | bytes) -> None:
        """Send one text (str) or binary (bytes) message."""

    @abstractmethod
    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the connection, or reject the handshake (HTTP 403) before accept."""

    @abstractmethod
    async def fail_handshake(self, status: int) -> None:
        """Answer the handshake with an HTTP error (a consumer raised before deciding)."""

    @abstractmethod
    async def leave_all_groups(self) -> None:
        """Remove this connection from every group it is in."""

    # Inbox -----------------------------------------------------------------------------

    def deliver(self, event: Event) -> bool:
        """Queue a channel layer event for the consumer. Returns False when the inbox is
        over its capacity: the caller then treats the consumer as too slow. Unlike
        frames from the client, these events expire (``expiry``)."""
        if self._disconnect_queued:
            return True  # the consumer is finishing; late events have no one to go to
        if len(self._inbox) >= self.capacity:
            return False
        self._queue(time.monotonic(), event)
        return True

    def deliver_disconnect(self, code: int) -> None:
        """Queue ``websocket.disconnect`` (always accepted, even over capacity)."""
        if not self._disconnect_queued:
            self._disconnect_queued = True
            self._queue(math.inf, {"type": "websocket.disconnect", "code": code})

    def deliver_from_client(self, event: Event) -> bool:
        """Queue a frame from the client. Never refused: a client's frames are not
        dropped. Returns False once the inbox is at capacity; the server then stops
        reading from the client until :meth:`when_room` calls back."""
        if self._disconnect_queued:
            return True
        self._queue(math.inf, event)
        return len(self._inbox) < self.capacity

    def _queue(self, arrived: float, event: Event) -> None:
        """Append to the inbox and wake the consumer if it is waiting for an event."""
        self._inbox.append((arrived, event))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def when_room(self, resume: Callable[[], None]) -> None:
        """Call ``resume`` once the consumer has taken its inbox below capacity."""
        self._resume = resume

    async def wait_for_room(self) -> None:
        """Wait until the inbox is below capacity (backpressure for inbound frames)."""
        while len(self._inbox) >= self.capacity and not self._disconnect_queued:
            room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.when_room(functools.partial(_set_once, room))
            await room

    # The consumer's life ---------------------------------------------------------------

    async def run(self, consumer: Any) -> None:
        """Drive ``consumer`` from ``websocket.connect`` to ``websocket.disconnect``."""
        self._inbox.insert(0, (math.inf, {"type": "websocket.connect"}))
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        # Named after the consumer, so the loop watchdog (and asyncio's debug mode) can
        # say which consumer blocked the loop.
        task_name = f"{type(consumer).__qualname__} on {self.channel_name}"
        named_for = ""
        traced = tracing_enabled()
        try:
            while True:
                if not self._inbox:
                    self._waiter = loop.create_future()
                    await self._waiter
                    self._waiter = None
                arrived, event = self._inbox.pop(0)
                resume = self._resume
                if resume is not None and len(self._inbox) < self.capacity:
                    self._resume = None
                    resume()
                if arrived != math.inf and time.monotonic() - arrived > self.expiry:
                    self.expired += 1
                    logger.warning(
                        "event %r for %s expired after %.0fs in its inbox and was dropped",
                        event_type_of(event),
                        self.channel_name,
                        self.expiry,
                    )
                    continue
                event_type = event_type_of(event)
                if task is not None and event_type != named_for:
                    named_for = event_type
                    task.set_name(f"{task_name} handling {event_type!r}")
                is_connect = event_type == "websocket.connect"
                is_disconnect = event_type == "websocket.disconnect"
                try:
                    if traced and event_type == "websocket.receive":
                        with span("django_ws receive", SpanKind.SERVER, channel=self.channel_name):
                            await consumer.dispatch(event)
                    else:
                        await consumer.dispatch(event)
                except StopConsumer:
                    if not self.decided:
                        await self.close()
                    if is_disconnect or not self.accepted:
                        break
                    await self.close(CloseCode.NORMAL)
                except Exception:
                    logger.exception(
                        "consumer %s raised while handling %r on %s",
                        type(consumer).__qualname__,
                        event_type_of(event),
                        self.channel_name,
                    )
                    if is_disconnect:
                        break
                    if not self.decided:
                        await self.fail_handshake(500)
                        break
                    await self.close(CloseCode.INTERNAL_ERROR)
                if is_disconnect:
                    break
                if is_connect and not self.decided:
                    # The seed's promise: a connect that neither accepts nor closes accepts.
                    await self.accept()
                if self.rejected:
                    break
        finally:
            await self.leave_all_groups()


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def event_type_of(event: Event) -> str:
    if isinstance(event, dict):
        return str(event.get("type", ""))
    return str(getattr(event, "type", ""))
