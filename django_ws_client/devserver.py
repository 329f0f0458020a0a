"""One origin in development: Django's development server hands websocket upgrades to
the edge.

``manage.py runserver`` (with ``django_ws_client`` installed) serves as Django's does,
on the address it is given, with one change to its request handler: a request with
``Upgrade: websocket`` is not given to Django but spliced, bytes both ways, to a
``websockets_server`` listening on a private unix socket. Pages, forms, static files
and websockets then share one origin, as with Channels' daphne-backed runserver, and
``new WebSocket(`ws://${window.location.host}/ws/...`)`` works unchanged.

Why splice inside Django's own server rather than put a proxy in front of it: nothing
else listens, so the address, the banner, ``--ipv6``, threading, static files and the
autoreloader stay Django's; only upgrade requests take another path, and a browser
always opens a new connection for a websocket, so the choice is made once per
connection on its first request.
"""

from __future__ import annotations

import selectors
import socket
import time
from typing import Any

from django.core.servers.basehttp import ServerHandler, WSGIRequestHandler, WSGIServer

EDGE_WAIT_SECONDS = 15.0
"""How long an upgrade waits for the edge to listen (it starts with the dev server)."""

_CHUNK = 65536


def _connect_to_edge(path: str, deadline: float) -> socket.socket | None:
    while True:
        edge = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            edge.connect(path)
            return edge
        except OSError:
            edge.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def splice(left: socket.socket, right: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    peer = {left: right, right: left}
    with selectors.DefaultSelector() as selector:
        selector.register(left, selectors.EVENT_READ)
        selector.register(right, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = source.recv(_CHUNK)
                    if not data:
                        return
                    peer[source].sendall(data)
                except OSError:
                    return


class UpgradeRoutingRequestHandler(WSGIRequestHandler):
    """Django's request handler, except that websocket upgrades go to the edge."""

    server: DevServer

    def handle_one_request(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.close_connection = True
            self.to_edge()
            return
        # What Django's handler does with every other request.
        handler = ServerHandler(self.rfile, self.wfile, self.get_stderr(), self.get_environ())
        handler.request_handler = self
        handler.run(self.server.get_app())

    def to_edge(self) -> None:
        """Replay the handshake to the edge, then splice the two connections."""
        edge = _connect_to_edge(self.server.edge_socket, time.monotonic() + EDGE_WAIT_SECONDS)
        if edge is None:
            self.send_error(503, "the websocket server is not running (see its errors above)")
            return
        head = bytes(self.raw_requestline) + b"".join(
            f"{name}: {value}\r\n".encode("latin-1") for name, value in self.headers.items()
        )
        with edge:
            edge.sendall(head + b"\r\n" + self._buffered())
            answer = edge.recv(_CHUNK)  # the edge's handshake response comes first
            if not answer:
                self.send_error(502, "the websocket server closed the connection")
                return
            self.connection.sendall(answer)
            status = answer.split(b"\r\n", 1)[0].split(b" ", 2)[1:2]
            # Django's format for a request line: '"GET /ws/chat/ HTTP/1.1" 101 -'.
            self.log_message(
                '"%s" %s %s', self.requestline, status[0].decode("latin-1") if status else "-", "-"
            )
            splice(self.connection, edge)

    def _buffered(self) -> bytes:
        """Bytes the client sent after the handshake that the reader already holds."""
        self.connection.setblocking(False)
        try:
            return bytes(self.rfile.read1(_CHUNK) or b"")
        except (BlockingIOError, OSError):
            return b""
        finally:
            self.connection.setblocking(True)


class QuietUpgradeRoutingRequestHandler(UpgradeRoutingRequestHandler):
    """For the live-server test case: no line per request, as Django's live server."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DevServer(WSGIServer):
    """Django's development server with :class:`UpgradeRoutingRequestHandler`."""

    edge_socket = ""
    handler_class: type[UpgradeRoutingRequestHandler] = UpgradeRoutingRequestHandler

    def __init__(self, address: Any, handler_class: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(address, self.handler_class, *args, **kwargs)


def dev_server_class(
    edge_socket: str,
    base: type[WSGIServer] = WSGIServer,
    handler_class: type[UpgradeRoutingRequestHandler] = UpgradeRoutingRequestHandler,
) -> type[DevServer]:
    """A server class (runserver's ``server_cls``, or a live server thread's
    ``server_class`` with ``base=ThreadedWSGIServer``) that routes upgrades to the edge
    listening on the unix socket ``edge_socket``."""
    bases = (DevServer,) if base is WSGIServer else (DevServer, base)
    return type(
        "DjangoWsDevServer", bases, {"edge_socket": edge_socket, "handler_class": handler_class}
    )
