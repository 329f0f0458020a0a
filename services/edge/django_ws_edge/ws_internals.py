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


def incompatibilities() -> list[str]:
    """What the installed websockets lacks of the internals the edge uses (empty: none)."""
    missing = [
        f"Connection.{name}" for name in _CONNECTION_METHODS if not hasattr(Connection, name)
    ]
    missing += [f"Assembler.{name}" for name in _ASSEMBLER_METHODS if not hasattr(Assembler, name)]
    missing += [f"Protocol.{name}" for name in _PROTOCOL_METHODS if not hasattr(Protocol, name)]
    if not hasattr(State, "OPEN"):
        missing.append("State.OPEN")
    source = _init_source()
    missing += [
        f"Connection.{name} (set in __init__)"
        for name in _CONNECTION_ATTRIBUTES
        if f"self.{name}" not in source
    ]
    return missing


def _init_source() -> str:
    import inspect

    try:
        return inspect.getsource(Connection.__init__)
    except (OSError, TypeError):  # no source shipped: trust the method checks
        return "".join(f"self.{name}" for name in _CONNECTION_ATTRIBUTES)


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
    "ServerConnection",
    "State",
    "incompatibilities",
    "release_handshake",
    "remember_failure",
    "require_compatible",
    "unwrap_logger",
    "websockets_version",
]
