"""The websockets connection class of the edge: where websockets' I/O meets the port.

Installed through websockets' ``create_connection`` hook, it changes three things about
``ServerConnection``:

* **Complete messages go straight to the consumer's inbox**, from the protocol
  callback that parsed them, instead of through websockets' message queue and a
  handler task reading it with ``recv()``. Each message then costs one task wake-up
  (the consumer's) instead of two, and an idle connection parks no ``recv()`` coroutine
  stack. websockets' own rules still hold: the protocol validates frames and
  fragments and enforces ``max_size``; fragmented messages are reassembled here with
  websockets' fragment limit; invalid UTF-8 closes with 1007. Backpressure moves with
  the messages: when the inbox is full, reading from the socket pauses until the
  consumer catches up.
* **No connection keeps a message queue**, since no message goes through one, and its
  flow-control waiters are a list instead of a deque: about 1.5 KiB less per idle
  connection (an empty deque holds a block of 64 slots).
* **No connection keeps a keepalive task.** One worker-wide schedule
  (:mod:`django_ws_edge.keepalive`) pings every connection each ``ping_interval`` and
  closes with 1011 one whose pong takes longer than ``ping_timeout``, as websockets'
  keepalive task does for each connection: about 1.4 KiB less per idle connection.
* **It cannot be made to buffer without bound.** websockets answers pings and close
  frames itself, straight into the transport, without flow control; consumer sends do
  wait (``write_limit``). A client that floods pings and never reads the pongs could
  therefore grow the worker's memory forever, so such a connection is aborted once its
  unsent data passes ``max_write_buffer``, and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import struct
from typing import TYPE_CHECKING, Any, NoReturn

from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event

from django_ws_edge import metrics
from django_ws_edge.keepalive import KeepaliveSchedule
from django_ws_edge.ws_internals import (
    ServerConnection,
    State,
    remember_failure,
    require_compatible,
    unwrap_logger,
)

if TYPE_CHECKING:
    from django_ws_edge.connection import EdgeConnection

logger = logging.getLogger("django_ws.edge")

# websockets' own limit on the fragments of one message, and the variable that sets it.
MAX_FRAGMENTS = int(os.environ.get("WEBSOCKETS_MAX_FRAGMENTS", "4096"))


def edge_connection_class(
    max_write_buffer: int, keepalive: KeepaliveSchedule | None = None
) -> type[ServerConnection]:
    """The connection class a worker serves with, its connections pinged on
    ``keepalive`` (None: websockets' task per connection); refuses a websockets release
    whose internals this class relies on have changed (see
    :mod:`django_ws_edge.ws_internals`)."""
    require_compatible()
    return type(
        "EdgeServerConnection",
        (EdgeServerConnection,),
        {"max_write_buffer": max_write_buffer, "ping_schedule": keepalive},
    )


class _Answered:
    """Stands in for the future websockets keeps with each pending ping, which it
    completes when the pong comes or fails when the connection closes. Nothing awaits a
    keepalive ping (the schedule looks its payload up instead), so one object that is
    always done serves every ping, and no closed connection leaves behind a failed
    future that nobody retrieved."""

    @staticmethod
    def done() -> bool:
        return True


_ANSWERED = _Answered()


class _NoMessageQueue:
    """Stands in for websockets' per-connection message queue (its ``Assembler``),
    which this connection class never fills: messages go to the consumer's inbox."""

    def close(self) -> None:
        """websockets closes the queue when the connection is lost; nothing to do."""

    def get(self, *args: Any) -> NoReturn:
        raise RuntimeError("an edge connection hands its messages to its consumer, not recv()")

    get_iter = get


_NO_MESSAGE_QUEUE = _NoMessageQueue()


class EdgeServerConnection(ServerConnection):
    max_write_buffer = 4 * 1024 * 1024
    # Class-level defaults, so that an idle connection's instance dict holds none of
    # them until it needs them.
    django_ws_port: EdgeConnection | None = None
    # Not ``keepalive``: that is the name of websockets' keepalive coroutine.
    ping_schedule: KeepaliveSchedule | None = None
    # Frames that came before the port did: a read or two at most, since the port is
    # attached as soon as the handshake request is handed over.
    _early: list[Frame] | None = None
    _fragments: list[bytes] | None = None
    _fragmented_text = False
    _failed = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drain_waiters = []  # type: ignore[assignment]  # append, remove, iterate
        unwrap_logger(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.recv_messages = _NO_MESSAGE_QUEUE  # type: ignore[assignment]

    def start_keepalive(self) -> None:
        """Join the worker's keepalive schedule instead of starting a task (websockets
        calls this once the connection is open)."""
        if self.ping_schedule is None:
            super().start_keepalive()
        elif self.ping_interval is not None:
            self.ping_schedule.add(self, self.loop.time())

    def send_keepalive_ping(self) -> bytes | None:
        """Ping the client now, as websockets' ``ping()`` does but without waiting:
        pings skip flow control there too. None once the connection is not open."""
        if self.protocol.state is not State.OPEN:
            return None
        pending = self.pending_pings
        payload = struct.pack("!I", random.getrandbits(32))
        while payload in pending:
            payload = struct.pack("!I", random.getrandbits(32))
        pending[payload] = (_ANSWERED, self.loop.time())  # type: ignore[assignment]
        self.protocol.send_ping(payload)
        self.send_data()
        return payload

    def awaits_pong(self, payload: bytes) -> bool:
        """Whether the ping ``payload`` is unanswered on a connection still open
        (websockets drops a ping from ``pending_pings`` when its pong, or a later
        one's, comes)."""
        return payload in self.pending_pings and self.protocol.state is State.OPEN

    def fail_keepalive(self) -> None:
        """The client did not answer a ping within ``ping_timeout``: close with 1011,
        as websockets' keepalive does."""
        metrics.KEEPALIVE_TIMEOUTS.inc()
        self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout", None)

    def attach(self, port: EdgeConnection) -> None:
        """Hand messages to ``port`` from now on, starting with any that came early (a
        client may pipeline frames behind its handshake request), and tell it when the
        connection is lost (a method call instead of a callback on websockets' future:
        no bound method and callback list per connection)."""
        self.django_ws_port = port
        early, self._early = self._early, None
        for frame in early or ():
            self._take_frame(port, frame)
        if self.connection_lost_waiter.done():
            self.loop.call_soon(port.connection_lost)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        port = self.django_ws_port
        if port is not None:
            port.connection_lost()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > self.max_write_buffer:
            metrics.SLOW_CONSUMERS_CLOSED.inc()
            logger.warning(
                "cut off %s: %d bytes it does not read are waiting to be sent (limit %d)",
                self.remote_address,
                transport.get_write_buffer_size(),
                self.max_write_buffer,
            )
            transport.abort()

    def process_event(self, event: Event) -> None:
        if not isinstance(event, Frame):  # the handshake request
            super().process_event(event)
            return
        if event.opcode is Opcode.PONG:
            self.acknowledge_pings(bytes(event.data))
            return
        if event.opcode is Opcode.PING or event.opcode is Opcode.CLOSE:
            return  # the protocol has answered it already
        port = self.django_ws_port
        if port is None:
            if self._early is None:
                self._early = []
            self._early.append(event)
            return
        self._take_frame(port, event)

    def _take_frame(self, port: EdgeConnection, frame: Frame) -> None:
        """One data frame: a whole message goes to the port; a fragment waits for the
        rest of its message. The protocol has checked the order of fragments."""
        if self._failed:
            return
        fragments = self._fragments
        if fragments is None and frame.fin:
            data = frame.data if type(frame.data) is bytes else bytes(frame.data)
            text = frame.opcode is Opcode.TEXT
        else:
            if fragments is None:
                fragments = self._fragments = []
                self._fragmented_text = frame.opcode is Opcode.TEXT
            if len(fragments) >= MAX_FRAGMENTS:
                self._fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments", None)
                return
            fragments.append(bytes(frame.data))
            if not frame.fin:
                return
            data = b"".join(fragments)
            text = self._fragmented_text
            self._fragments = None
        if text:
            try:
                message: str | bytes = data.decode()
            except UnicodeDecodeError as exc:
                self._fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}", exc)
                return
        else:
            message = data
        port.receive_message(message)

    def _fail(self, code: CloseCode, reason: str, exc: Exception | None) -> None:
        """Close the connection for a message that cannot be delivered, as websockets'
        ``recv()`` would have; later frames are ignored."""
        self._failed = True
        if exc is not None:
            remember_failure(self, exc)
        self._failing = self.loop.create_task(self._send_failure(code, reason))

    async def _send_failure(self, code: CloseCode, reason: str) -> None:
        try:
            async with self.send_context():
                self.protocol.fail(code, reason)
        except ConnectionClosed:
            pass
