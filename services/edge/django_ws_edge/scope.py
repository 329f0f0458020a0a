"""Building a Channels-shaped scope from a websockets handshake request."""

from __future__ import annotations

import socket
from collections.abc import Callable
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

# Read-only and shared by every connection's scope: the same for all of them.
_ASGI = MappingProxyType({"version": "3.0", "spec_version": "2.3"})

# The names every handshake carries, as the byte strings the scope holds: one shared
# object per name instead of one per connection (scopes live as long as connections).
_COMMON_NAMES = {
    name: name.encode("latin-1")
    for name in (
        "host",
        "upgrade",
        "connection",
        "origin",
        "cookie",
        "user-agent",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "pragma",
        "authorization",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-real-ip",
    )
}


def _header_name(name: str) -> bytes:
    lowered = name.lower()
    return _COMMON_NAMES.get(lowered) or lowered.encode("latin-1")


# Headers whose values most handshakes repeat (the same browser, host and origin, the
# same websocket negotiation): their (name, value) pairs are shared too, about 100
# bytes per such header of each idle connection. The table is bounded in entries and
# in value length, so a client sending random values only keeps it from growing. Only
# headers that carry no secret are listed: a shared value outlives its connection
# (``sec-websocket-protocol`` carries access tokens in some apps, so it is not).
_SHARED_VALUE_NAMES = frozenset(
    _COMMON_NAMES[name]
    for name in (
        "host",
        "upgrade",
        "connection",
        "origin",
        "user-agent",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "pragma",
        "sec-websocket-version",
        "sec-websocket-extensions",
    )
)
SHARED_VALUES_MAX = 1024
SHARED_VALUE_LENGTH_MAX = 512
_shared_headers: dict[tuple[bytes, str], tuple[bytes, bytes]] = {}


def _shared(table: dict[Any, Any], key: Any, make: Callable[[], Any], length: int) -> Any:
    """The object ``table`` keeps for ``key``, or a new one from ``make``, kept while the
    table has room and the value is at most SHARED_VALUE_LENGTH_MAX long."""
    shared = table.get(key)
    if shared is None:
        shared = make()
        if len(table) < SHARED_VALUES_MAX and length <= SHARED_VALUE_LENGTH_MAX:
            table[key] = shared
    return shared


def _header(name: bytes, value: str) -> tuple[bytes, bytes]:
    """One header of the scope, shared with other scopes where its value repeats."""
    if name not in _SHARED_VALUE_NAMES:
        return (name, value.encode("latin-1"))
    pair: tuple[bytes, bytes] = _shared(
        _shared_headers, (name, value), lambda: (name, value.encode("latin-1")), len(value)
    )
    return pair


# Client and server host strings, shared the same way: behind a proxy every connection
# comes from the same few addresses, and a worker listens on one.
_shared_hosts: dict[str, str] = {}


def _address(sock_address: Any) -> list[Any] | None:
    if not (isinstance(sock_address, tuple) and len(sock_address) >= 2):
        return None
    host = sock_address[0]
    if isinstance(host, str):
        host = _shared(_shared_hosts, host, lambda: host, len(host))
    return [host, sock_address[1]]


def build_scope(connection: ServerConnection, request: Request) -> dict[str, Any]:
    """The scope Channels would give: ``type``, ``path``, ``raw_path``,
    ``query_string``, ``headers`` (lowercased byte pairs), ``client``, ``server``,
    ``subprotocols``; middlewares add ``cookies``, ``session``, ``user``, ``url_route``."""
    target = urlsplit(request.path)
    # Sized exactly: a list grown by appending keeps spare slots for the connection's life.
    headers = list(
        tuple(_header(_header_name(name), value) for name, value in request.headers.raw_items())
    )
    subprotocols: list[str] = []
    for value in request.headers.get_all("Sec-WebSocket-Protocol"):
        subprotocols.extend(item.strip() for item in value.split(",") if item.strip())
    transport = connection.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    is_unix = sock is not None and sock.family == socket.AF_UNIX
    return {
        "type": "websocket",
        "asgi": _ASGI,
        "http_version": "1.1",
        "scheme": "wss" if transport and transport.get_extra_info("sslcontext") else "ws",
        "path": unquote(target.path),
        "raw_path": target.path.encode("latin-1"),
        "root_path": "",
        "query_string": target.query.encode("latin-1"),
        "headers": headers,
        "client": None if is_unix else _address(connection.remote_address),
        "server": None if is_unix else _address(connection.local_address),
        "subprotocols": subprotocols,
        "extensions": {},
    }
