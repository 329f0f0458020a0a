"""The parts of websockets' internals the edge relies on, in one place.

The edge's connection class (:mod:`django_ws_edge.server_connection`) and its fast send
path (:func:`django_ws_edge.connection.write_now`) reach past websockets' public API:
they replace the per-connection message queue, override protocol callbacks, write
frames directly, and ping on a worker-wide schedule instead of the keepalive task
(recording each ping in ``pending_pings`` as ``ping()`` does). Those names are not
promised across releases, so they are listed here and :func:`incompatibilities` checks
them; the worker refuses to start on a websockets release that lacks any, naming what is
missing, instead of failing on a live connection.
"""

from __future__ import annotations

import logging

from websockets.asyncio.connection import Connection
from websockets.asyncio.messages import Assembler
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State
from websockets.version import version as websockets_version

SUPPORTED = ">=16,<18"
"""The websockets releases these internals were checked against (pyproject's range)."""

# What an open connection's handshake request is left with: nothing reads it again.
_NO_HEADERS = Headers()

# Methods the edge's connection class overrides or calls, by the class that defines them.
_CONNECTION_METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "process_event",
    "acknowledge_pings",
    "send_context",
    "send_data",
    "start_keepalive",
)
# Instance attributes set in Connection.__init__ that the edge reads or replaces.
_CONNECTION_ATTRIBUTES = (
    "recv_messages",
    "drain_waiters",
    "send_in_progress",
    "paused",
    "pending_pings",
    "request",
    "response",
)
_ASSEMBLER_METHODS = ("close", "get", "get_iter")
_PROTOCOL_METHODS = ("send_text", "send_binary", "send_ping")
# Instance attributes set in Protocol.__init__ that the edge reads (write_frame).
_PROTOCOL_ATTRIBUTES = ("writes", "extensions", "expect_continuation_frame", "debug")


def incompatibilities() -> list[str]:
    """What the installed websockets lacks of the internals the edge uses (empty: none)."""
    missing = [
        f"Connection.{name}" for name in _CONNECTION_METHODS if not hasattr(Connection, name)
    ]
    missing += [f"Assembler.{name}" for name in _ASSEMBLER_METHODS if not hasattr(Assembler, name)]
    missing += [f"Protocol.{name}" for name in _PROTOCOL_METHODS if not hasattr(Protocol, name)]
    if not hasattr(State, "OPEN"):
        missing.append("State.OPEN")
    for cls, attributes in ((Connection, _CONNECTION_ATTRIBUTES), (Protocol, _PROTOCOL_ATTRIBUTES)):
        source = _init_source(cls, attributes)
        missing += [
            f"{cls.__name__}.{name} (set in __init__)"
            for name in attributes
            if f"self.{name}" not in source
        ]
    return missing


def _init_source(cls: type, attributes: tuple[str, ...]) -> str:
    import inspect

    try:
        return inspect.getsource(vars(cls)["__init__"])
    except (OSError, TypeError):  # no source shipped: trust the method checks
        return "".join(f"self.{name}" for name in attributes)


class FrameCache:
    """The last message framed for a connection with no extension, and its frame.

    A server frame without extensions depends on nothing but the message: no mask, no
    compression context. When a group message reaches hundreds of members of one
    worker, each member's consumer sends the same string object (the event dicts are
    copies, their values are not), so the frame is built once and written to each
    socket, as ``websockets.broadcast`` does. One entry, and only for frames up to
    ``max_bytes``: the cache never holds more than one modest message. Only ``str`` and
    ``bytes`` are kept: a ``bytearray`` sent again may have changed since.
    """

    def __init__(self, max_bytes: int = 65536) -> None:
        self.max_bytes = max_bytes
        self._data: str | bytes | None = None
        self._frame = b""

    def frame(self, data: str | bytes) -> bytes:
        if data is self._data:
            return self._frame
        if isinstance(data, str):
            frame = Frame(Opcode.TEXT, data.encode()).serialize(mask=False)
        else:
            frame = Frame(Opcode.BINARY, data).serialize(mask=False)
            if not isinstance(data, bytes):
                return frame  # mutable: never kept
        if len(frame) <= self.max_bytes:
            self._data, self._frame = data, frame
        return frame


def write_frame(connection: Connection, data: str | bytes, frames: FrameCache) -> bool:
    """Write one whole message to an open connection straight to its transport, as
    ``Protocol.send_text``/``send_binary`` and ``Connection.send_data`` would, when
    nothing makes that differ: no extension (compression frames per connection), no
    fragmented message in progress, nothing queued in the protocol ahead of it, no
    debug logging of frames. False when the caller must go through the protocol."""
    protocol = connection.protocol
    if (
        protocol.extensions
        or protocol.writes
        or protocol.expect_continuation_frame
        or protocol.debug
    ):
        return False
    connection.transport.write(frames.frame(data))
    return True


def remember_failure(connection: Connection, exc: BaseException) -> None:
    """Record why the connection is failing, so ``ConnectionClosed`` names it as its
    cause (websockets 17's ``set_connection_exc``; 16 keeps no such cause: nothing to
    record there)."""
    setter = getattr(connection, "set_connection_exc", None)
    if setter is not None:
        setter(exc)


def release_handshake(connection: ServerConnection) -> None:
    """Let go of what only the handshake needed, which would otherwise stay as long as
    the connection, for each of thousands: websockets does not look at the handshake
    response or the request's headers again once the connection is open. The request
    itself stays (the protocol's parser keeps it in a local variable for the life of
    the connection, and ``process_event`` tells the handshake from frames by it), so
    its headers are emptied in place. The protocol's ``select_subprotocol``, which
    websockets binds per connection to a closure around the server's, goes too: the
    class's own method stands in, and nothing negotiates again."""
    connection.response = None
    if connection.request is not None:
        connection.request.headers = _NO_HEADERS
    vars(connection.protocol).pop("select_subprotocol", None)


def unwrap_logger(connection: Connection) -> None:
    """Log through the plain logger instead of the adapter websockets wraps around it
    for each connection (which adds the connection to each record's ``extra``): an
    adapter, its dict and a weak proxy per connection, and nothing of ours formats
    them."""
    adapter = connection.protocol.logger
    if isinstance(adapter, logging.LoggerAdapter):
        connection.protocol.logger = connection.logger = adapter.logger


def require_compatible() -> None:
    """Raise with what is missing when the installed websockets cannot serve the edge."""
    missing = incompatibilities()
    if missing:
        raise RuntimeError(
            f"websockets {websockets_version} lacks internals the edge relies on "
            f"({', '.join(missing)}); install websockets{SUPPORTED}"
        )


__all__ = [
    "SUPPORTED",
    "Assembler",
    "Connection",
    "FrameCache",
    "ServerConnection",
    "State",
    "incompatibilities",
    "release_handshake",
    "remember_failure",
    "require_compatible",
    "unwrap_logger",
    "websockets_version",
    "write_frame",
]
