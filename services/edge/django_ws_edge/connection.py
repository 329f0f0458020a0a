"""One websocket connection at the edge: the bridge between websockets and a consumer.

The consumer's ``connect`` runs while the handshake is still open (inside websockets'
``process_request``), so ``accept()`` completes it with the chosen subprotocol,
``close()`` before ``accept()`` answers HTTP 403, a route that does not match answers
404, and a consumer that raises answers 500. After the handshake, frames from the client
and events from groups go through the port's inbox, one handler at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed

from django_ws_client.connection import CloseCode, ConnectionPort, Event
from django_ws_edge import metrics
from django_ws_edge.guards import TokenBucket
from django_ws_edge.layer import EdgeChannelLayer
from django_ws_edge.options import DEFAULT_SLOW_CLIENT_SECONDS
from django_ws_edge.ws_internals import (
    FrameCache,
    ServerConnection,
    State,
    release_handshake,
    write_frame,
)

logger = logging.getLogger("django_ws.edge")


@dataclass(frozen=True)
class Decision:
    """How the handshake ends: accepted (with subprotocol and headers) or an HTTP status."""

    accept: bool
    status: int = 101
    subprotocol: str | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()


# How almost every handshake ends; shared, since a decision is never changed.
_ACCEPTED = Decision(True)


class EdgeConnection(ConnectionPort):
    """A :class:`ConnectionPort` over a websockets ``ServerConnection``."""

    slow_client_seconds = DEFAULT_SLOW_CLIENT_SECONDS

    def __init__(
        self,
        websocket: ServerConnection,
        layer: EdgeChannelLayer,
        capacity: int,
        limiter: TokenBucket | None = None,
    ) -> None:
        super().__init__(channel_name=layer.new_channel_name(), layer=layer, capacity=capacity)
        self.websocket = websocket
        self.edge_layer = layer
        self.limiter = limiter
        # Until the connection opens: how the handshake ends.
        self.decision: asyncio.Future[Decision] | None = (
            asyncio.get_running_loop().create_future()
        )
        self.task: asyncio.Task[None] | None = None
        self.is_open = False
        # Created only when needed: a send or close before the connection is open
        # waits on ``_opened``; the server's handler waits on ``_ended``.
        self._opened: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[None] | None = None
        self._closing_slow = False
        self._over_limit: asyncio.Task[None] | None = None

    def connection_lost(self) -> None:
        """websockets lost the connection (the edge's connection class calls this).
        Once open, this ends the server's handler's wait. Before (the client vanished
        during the handshake, or the server began shutting down), it ends the consumer
        here, so nothing is left waiting for a disconnect that would never come."""
        opened = self._opened
        if opened is not None and not opened.done():
            opened.set_result(None)  # a send waiting for the open finds the connection closed
        if self.is_open:
            if self._ended is not None and not self._ended.done():
                self._ended.set_result(None)
            return
        if self.task is None or self.task.done():
            return
        if self.accepted:
            self.deliver_disconnect(1006)
        else:
            self.task.cancel()

    def mark_open(self) -> asyncio.Future[None]:
        """websockets handed the connection to the server's handler: sends may go out.
        Returns what the handler waits on: done when the connection is lost.

        Also lets go of what only the handshake needed, which would otherwise stay as
        long as the connection, for each of thousands: the decision, and websockets'
        handshake request and response (the scope has its own copy of the headers, and
        a browser's cookies alone can be kilobytes).
        """
        self.is_open = True
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(None)
        self._opened = None
        self.decision = None  # decided: nothing waits on it any more
        websocket = self.websocket
        release_handshake(websocket)
        # One future and no task: websockets' wait_closed() would add a shield, its
        # callbacks and a coroutine frame to every idle connection.
        ended = self._ended = asyncio.get_running_loop().create_future()
        if websocket.connection_lost_waiter.done():
            ended.set_result(None)
        return ended

    async def _until_open(self) -> None:
        if self.websocket.connection_lost_waiter.done():
            return  # never to open: the send or close that waits finds it closed
        if self._opened is None:
            self._opened = asyncio.get_running_loop().create_future()
        await self._opened

    def receive_message(self, message: str | bytes) -> None:
        """One whole message from the client, handed over by the connection's protocol
        callback: it goes to the consumer's inbox, unless the client is over its rate
        limit. A full inbox pauses reading from the socket until the consumer catches
        up, so a client that sends faster than its consumer handles is held back, not
        dropped."""
        self.edge_layer.tally.received += 1
        if self._over_limit is not None:
            return  # closing: keep reading so that the client's close reply gets through
        limiter = self.limiter
        if limiter is not None and not limiter.allow():
            metrics.RATE_LIMITED.inc()
            self._over_limit = asyncio.get_running_loop().create_task(
                self.websocket.close(CloseCode.POLICY, "rate limit exceeded")
            )
            return
        if not self.deliver_from_client(receive_event(message)):
            transport = self.websocket.transport
            transport.pause_reading()
            self.when_room(transport.resume_reading)

    def _decide(self, decision: Decision) -> None:
        if self.decision is not None and not self.decision.done():
            self.decision.set_result(decision)

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None
    ) -> None:
        if self.decided:
            return
        self.accepted = True
        extra = tuple(headers) if headers else ()
        if subprotocol is None and not extra:
            self._decide(_ACCEPTED)
        else:
            self._decide(Decision(True, subprotocol=subprotocol, headers=extra))

    async def send(self, data: str | bytes) -> None:
        if not self.accepted:
            raise RuntimeError("send() before accept(): accept the connection in connect() first")
        if not self.is_open:
            await self._until_open()
        if not write_now(self.websocket, data):
            # The client is not reading as fast as it is sent to: wait for its socket to
            # drain. The worker closes it if that takes SLOW_CLIENT_SECONDS (a timer per
            # send would cost every busy connection a task).
            blocked = self.edge_layer.local.blocked_sends
            blocked[self] = self.websocket.loop.time()
            try:
                await self.websocket.send(data)
            except ConnectionClosed:
                return  # the disconnect event is on its way to the consumer
            finally:
                blocked.pop(self, None)
        self.edge_layer.tally.sent += 1

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        if not self.decided:
            self.rejected = True
            self._decide(Decision(False, 403))
            return
        if self.rejected or self.close_requested:
            return
        self.close_requested = True
        if not self.is_open:
            await self._until_open()
        await self.websocket.close(code or 1000, reason or "")

    async def fail_handshake(self, status: int) -> None:
        self.rejected = True
        self._decide(Decision(False, status))

    async def leave_all_groups(self) -> None:
        self.edge_layer.unregister(self.channel_name)

    def on_consumer_error(self, event_type: str) -> None:
        metrics.CONSUMER_ERRORS.inc()

    def close_slow(self, why: str) -> None:
        """Close a client that does not keep up, without waiting on it: the events
        still waiting for it are dropped and counted."""
        if self._closing_slow or not self.accepted:
            return
        self._closing_slow = True
        lost = self.discard_pending()
        metrics.SLOW_CONSUMERS_CLOSED.inc()
        if lost:
            metrics.DELIVERIES_LOST.labels("slow_client").inc(lost)
        logger.warning(
            "closing %s as too slow: %s; %d events waiting for it dropped",
            self.channel_name,
            why,
            lost,
        )
        asyncio.get_running_loop().create_task(
            self.websocket.close(CloseCode.TRY_AGAIN_LATER, "client too slow")
        )

    def on_expired(self, event: Event) -> None:
        super().on_expired(event)
        metrics.DELIVERIES_LOST.labels("expired").inc()


def write_now(websocket: ServerConnection, data: str | bytes) -> bool:
    """Write one message straight to the transport when nothing could make it wait;
    False when the caller must go through ``websocket.send()``.

    ``send()`` enters an async context manager around every message, which costs more
    than framing and writing it: with a group message going to hundreds of members of
    one worker, that was a tenth of the worker's time. While the connection is open,
    no fragmented message is being sent and flow control has not paused the
    transport, the context has nothing to do but write, so this writes the frame the
    way ``websockets.broadcast`` does, built once for the members a group message
    reaches in a row (``FrameCache``). Otherwise ``send()`` waits for the buffer to
    drain (so a client that stops reading still holds its consumer back and is closed
    as too slow) or raises ``ConnectionClosed``.
    """
    if (
        websocket.protocol.state is not State.OPEN
        or websocket.send_in_progress is not None
        or websocket.paused
    ):
        return False
    if write_frame(websocket, data, _FRAMES):
        return True
    if isinstance(data, str):
        websocket.protocol.send_text(data.encode())
    else:
        websocket.protocol.send_binary(data)
    websocket.send_data()
    return True


# The worker's last framed message: a group message is framed once for all the members
# it reaches in a row (see FrameCache).
_FRAMES = FrameCache()


def receive_event(message: str | bytes) -> dict[str, Any]:
    if isinstance(message, str):
        return {"type": "websocket.receive", "text": message}
    return {"type": "websocket.receive", "bytes": message}
