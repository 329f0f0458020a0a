"""Building a Channels-shaped scope from a websockets handshake request."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request


def _address(sock_address: Any) -> list[Any] | None:
    if isinstance(sock_address, tuple) and len(sock_address) >= 2:
        return [sock_address[0], sock_address[1]]
    return None


def build_scope(connection: ServerConnection, request: Request) -> dict[str, Any]:
    """The scope Channels would give: ``type``, ``path``, ``raw_path``,
    ``query_string``, ``headers`` (lowercased byte pairs), ``client``, ``server``,
    ``subprotocols``; middlewares add ``cookies``, ``session``, ``user``, ``url_route``."""
    target = urlsplit(request.path)
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in request.headers.raw_items()
    ]
    subprotocols: list[str] = []
    for value in request.headers.get_all("Sec-WebSocket-Protocol"):
        subprotocols.extend(item.strip() for item in value.split(",") if item.strip())
    transport = connection.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    is_unix = sock is not None and sock.family == socket.AF_UNIX
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
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
        "state": {},
    }
