"""Test helpers for projects that use django-ws.

:class:`WebsocketCommunicator` drives a consumer in-process, through the real middleware
stack and connection rules, with an in-memory channel layer: the same methods and return
values as Channels' communicator, so ported tests keep working. For tests against the
real server (worker processes, embedded broker, real sockets) use :class:`LiveServer`
or the ``live_websockets_server`` pytest fixture in :mod:`django_ws_client.pytest_plugin`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from django_ws_client.connection import ConnectionPort
from django_ws_client.exceptions import DenyConnection, HandshakeRejected
from django_ws_client.transport import get_channel_layer, use_layer
from django_ws_client.transport.config import parse_config
from django_ws_client.transport.inmemory import InMemoryChannelLayer

Scope = dict[str, Any]


class _TestPort(ConnectionPort):
    """A connection whose other end is the test: outputs go to a queue."""

    def __init__(self, layer: InMemoryChannelLayer, channel_name: str) -> None:
        super().__init__(channel_name=channel_name, layer=layer, capacity=layer.capacity)
        self.memory_layer = layer
        self.outputs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        layer.attach(channel_name, self.deliver)

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None
    ) -> None:
        if self.decided:
            return
        self.accepted = True
        await self.outputs.put(
            {"type": "websocket.accept", "subprotocol": subprotocol, "headers": list(headers or [])}
        )

    async def send(self, data: str | bytes) -> None:
        if not self.accepted:
            raise RuntimeError("send() before accept(): accept the connection in connect() first")
        key = "text" if isinstance(data, str) else "bytes"
        await self.outputs.put({"type": "websocket.send", key: data})

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        if not self.decided:
            self.rejected = True
            await self.outputs.put({"type": "websocket.close", "code": 403, "reason": "rejected"})
            return
        if self.close_requested:
            return
        self.close_requested = True
        await self.outputs.put(
            {"type": "websocket.close", "code": code or 1000, "reason": reason or ""}
        )
        # As on the real server, the consumer then hears of its own close.
        self.deliver_disconnect(code or 1000)

    async def fail_handshake(self, status: int) -> None:
        self.rejected = True
        await self.outputs.put(
            {"type": "websocket.close", "code": status, "reason": "handshake failed"}
        )

    async def leave_all_groups(self) -> None:
        self.memory_layer.detach(self.channel_name)


class WebsocketCommunicator:
    """Drive a websocket application in-process, as Channels' communicator does.

    ``application`` is a consumer handler (``MyConsumer.as_handler()``) or any
    middleware-wrapped app taking ``(scope, port)``; None means the project's own
    ``WEBSOCKET_MIDDLEWARE`` stack with its routes.
    """

    def __init__(
        self,
        application: Any = None,
        path: str = "/",
        headers: Iterable[tuple[bytes, bytes]] | None = None,
        subprotocols: Iterable[str] | None = None,
        spec_version: str | None = None,
    ) -> None:
        if application is None:
            from django_ws_client.conf import middleware_paths
            from django_ws_client.middlewares.base import build_stack

            application = build_stack(middleware_paths())
        self.application = application
        target = urlsplit(path)
        self.scope: Scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": spec_version or "2.3"},
            "path": unquote(target.path),
            "raw_path": target.path.encode(),
            "query_string": target.query.encode(),
            "headers": [(bytes(k).lower(), bytes(v)) for k, v in (headers or [])],
            "subprotocols": list(subprotocols or []),
            "client": ["127.0.0.1", 0],
            "server": ["testserver", 80],
        }
        configured = None
        try:
            configured = get_channel_layer()
        except Exception:
            configured = None
        self.channel_layer: InMemoryChannelLayer = (
            configured
            if isinstance(configured, InMemoryChannelLayer)
            else InMemoryChannelLayer(parse_config({}))
        )
        self._port: _TestPort | None = None
        self._task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        channel = await self.channel_layer.new_channel("test")
        self._port = _TestPort(self.channel_layer, channel)
        context = contextvars.copy_context()

        def run() -> asyncio.Task[None]:
            with use_layer(self.channel_layer):
                return asyncio.get_running_loop().create_task(self._run_app())

        self._task = context.run(run)

    async def _run_app(self) -> None:
        assert self._port is not None
        try:
            await self.application(self.scope, self._port)
        except (DenyConnection, HandshakeRejected) as exc:
            status = exc.status if isinstance(exc, HandshakeRejected) else 403
            await self._port.outputs.put(
                {"type": "websocket.close", "code": status, "reason": str(exc)}
            )

    async def receive_output(self, timeout: float = 1) -> dict[str, Any]:
        """The next message the application sent (accept, send or close)."""
        assert self._port is not None and self._task is not None, "call connect() first"
        getter = asyncio.ensure_future(self._port.outputs.get())
        done, _ = await asyncio.wait(
            {getter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            return getter.result()
        getter.cancel()
        if self._task in done:
            self._task.result()  # re-raise what the application raised
            if not self._port.outputs.empty():
                return self._port.outputs.get_nowait()
            raise AssertionError("the application finished without sending anything")
        raise TimeoutError(f"no output from the application within {timeout}s")

    async def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        """Open the connection: ``(True, subprotocol)``, or ``(False, code)`` where code is
        the close code or the HTTP status of a refused handshake."""
        await self._start()
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        return True, response.get("subprotocol")

    async def send_input(self, message: dict[str, Any]) -> None:
        assert self._port is not None, "call connect() first"
        if not self._port.deliver_from_client(message):
            await self._port.wait_for_room()

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if (text_data is None) == (bytes_data is None):
            raise ValueError("send_to() takes text_data or bytes_data")
        if text_data is not None:
            await self.send_input({"type": "websocket.receive", "text": text_data})
        else:
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})

    async def send_json_to(self, data: Any) -> None:
        await self.send_to(text_data=json.dumps(data))

    async def receive_from(self, timeout: float = 1) -> str | bytes:
        response = await self.receive_output(timeout)
        if response["type"] != "websocket.send":
            raise AssertionError(f"expected a websocket.send, got {response}")
        payload: str | bytes = (
            response["text"] if response.get("text") is not None else response["bytes"]
        )
        return payload

    async def receive_json_from(self, timeout: float = 1) -> Any:
        payload = await self.receive_from(timeout)
        if not isinstance(payload, str):
            raise AssertionError("expected a text frame with JSON, got bytes")
        return json.loads(payload)

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """True when the application sends nothing within ``timeout``."""
        assert self._port is not None, "call connect() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._port.outputs.empty():
                return False
            await asyncio.sleep(interval)
        return self._port.outputs.empty()

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        """Close from the client side and wait for ``disconnect()`` to finish."""
        if self._port is None or self._task is None:
            return
        self._port.deliver_disconnect(code)
        try:
            await asyncio.wait_for(self._task, timeout)
        finally:
            self.channel_layer.detach(self._port.channel_name)

    async def wait(self, timeout: float = 1) -> None:
        """Wait for the application to finish."""
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A real ``websockets_server`` (workers + embedded broker) on free ports.

    Use as a context manager; ``url`` is ``ws://127.0.0.1:PORT``. The server runs the
    project's own settings in child processes: a test database must be one they can see
    (a file-based SQLite test database, or PostgreSQL), passed with ``env`` if needed.
    """

    def __init__(
        self,
        *,
        workers: int = 1,
        manage_py: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self.workers = workers
        self.manage_py = Path(manage_py) if manage_py else Path(sys.argv[0]).with_name("manage.py")
        self.env = env or {}
        self.ready_timeout = ready_timeout
        self.port = 0
        self.health_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port, self.health_port = _free_port(), _free_port()
        # A private embedded broker, so a development server of the same project on
        # this machine is never shared (applies when CONFIG names no broker itself).
        socket_path = Path(tempfile.gettempdir()) / f"django-ws-test-{self.port}.sock"
        env = {**os.environ, "DJANGO_WS_BROKERS": f"unix:{socket_path}", **self.env}
        manage = self.manage_py if self.manage_py.exists() else None
        args = ([sys.executable, str(manage)] if manage else [sys.executable, "-m", "django"]) + [
            "websockets_server",
            "-b",
            f"127.0.0.1:{self.port}",
            "-w",
            str(self.workers),
            "--health",
            f"127.0.0.1:{self.health_port}",
            "--grace",
            "5",
        ]
        self.process = subprocess.Popen(args, env=env, start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"websockets_server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/readyz", timeout=1
                ):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"websockets_server was not ready within {self.ready_timeout}s")

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.process = None

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
