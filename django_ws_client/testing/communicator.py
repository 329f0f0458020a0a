"""``WebsocketCommunicator``: drive a websocket application in-process, as in Channels.

The application runs through the real connection rules (:class:`ConnectionPort`) and,
when none is given, the project's own middleware stack and routes, with in-memory
channel layers. Its methods, return values, assertion messages and failure behaviour
are Channels' (``channels.testing.WebsocketCommunicator`` over asgiref's
``ApplicationCommunicator``), so a ported test passes unchanged:

* the application may be a handler (``MyConsumer.as_asgi()``), a consumer *instance*
  (``MyConsumer()``), a middleware-wrapped app, or None for the project's stack;
* an exception the application raises is re-raised by the next ``receive_output()``
  (and everything built on it: ``connect``, ``receive_from``...), ``send_input``,
  ``receive_nothing`` and ``wait()``, instead of closing the connection with 1011 as the
  server does;
* a ``receive_output`` that times out cancels the application, then raises
  ``TimeoutError``;
* ``response_headers`` holds the headers ``accept(headers=...)`` sent;
* each ``channel_layer_alias`` a consumer names gets its own in-memory layer: the one
  ``get_channel_layer(alias)`` returns in the test when settings configure an in-memory
  layer for that alias (so the test publishes to the communicator's consumers), else a
  fresh one per communicator (``communicator.channel_layer``);
* database connections stay open while the application runs, so the ORM in
  ``connect()`` works inside a ``TestCase`` (see :mod:`django_ws_client.db`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import time
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any
from urllib.parse import unquote, urlsplit

from django_ws_client.connection import ConnectionPort
from django_ws_client.db import keeping_connections
from django_ws_client.exceptions import DenyConnection, HandshakeRejected, StopConsumer
from django_ws_client.transport import get_channel_layer, use_layer
from django_ws_client.transport.base import ChannelLayer
from django_ws_client.transport.config import parse_config
from django_ws_client.transport.inmemory import InMemoryChannelLayer

Scope = dict[str, Any]


class _ApplicationFailed(BaseException):
    """Carries a handler's exception past the connection rules (which would log it and
    close with 1011) to the test, where Channels' communicator re-raises it."""

    def __init__(self, original: Exception) -> None:
        super().__init__(original)
        self.original = original


class _TestPort(ConnectionPort):
    """A connection whose other end is the test: outputs go to a queue."""

    def __init__(self, layer: InMemoryChannelLayer, channel_name: str) -> None:
        super().__init__(channel_name=channel_name, layer=layer, capacity=layer.capacity)
        self.memory_layer = layer
        self.outputs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        layer.attach(channel_name, self.deliver)

    def bind_layer(self, layer: ChannelLayer) -> ChannelLayer:
        """Move this connection to the layer of its consumer's ``channel_layer_alias``."""
        if not isinstance(layer, InMemoryChannelLayer):
            raise TypeError(f"the communicator serves in-memory layers only, not {layer!r}")
        self.memory_layer.detach(self.channel_name)
        self.layer = self.memory_layer = layer
        layer.attach(self.channel_name, self.deliver)
        return layer

    async def run(self, consumer: Any) -> None:
        original = consumer.dispatch

        async def dispatch(event: Any) -> None:
            try:
                await original(event)
            except StopConsumer:
                raise
            except Exception as exc:
                raise _ApplicationFailed(exc) from exc

        had_own = "dispatch" in vars(consumer)
        consumer.dispatch = dispatch
        try:
            await super().run(consumer)
        finally:
            # A consumer instance routed to may serve the next connection too.
            if had_own:
                consumer.dispatch = original
            else:
                del consumer.dispatch

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
            # As Channels' communicator reports it: the consumer's close, with its code
            # (1000 by default). The real server answers such a handshake with HTTP 403.
            self.rejected = True
            await self.outputs.put(
                {"type": "websocket.close", "code": code or 1000, "reason": reason or ""}
            )
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


def _alias_of(application: Any) -> str:
    """The ``channel_layer_alias`` of the consumer an application runs, when known."""
    consumer_class = getattr(application, "consumer_class", None)
    if consumer_class is not None:
        return str(getattr(consumer_class, "channel_layer_alias", "default"))
    return str(getattr(application, "channel_layer_alias", "default"))


def _memory_layer(alias: str) -> InMemoryChannelLayer:
    """The in-memory layer settings configure for ``alias`` in tests, else a new one."""
    try:
        configured = get_channel_layer(alias)
    except Exception:
        configured = None
    if isinstance(configured, InMemoryChannelLayer):
        return configured
    return InMemoryChannelLayer(parse_config({}))


class WebsocketCommunicator:
    """Drive a websocket application in-process, as Channels' communicator does.

    ``application`` is a consumer handler (``MyConsumer.as_asgi()``), a consumer instance,
    any middleware-wrapped app taking ``(scope, port)``, or None for the project's own
    ``WEBSOCKET_MIDDLEWARE`` stack with its routes.
    """

    def __init__(
        self,
        application: Any,
        path: str = "/",
        headers: Iterable[tuple[bytes, bytes]] | None = None,
        subprotocols: Iterable[str] | None = None,
        spec_version: str | None = None,
    ) -> None:
        if not isinstance(path, str):
            raise TypeError(f"Expected str, got {type(path)}")
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
        self.alias = _alias_of(application)
        self.channel_layer: InMemoryChannelLayer = _memory_layer(self.alias)
        self.response_headers: list[tuple[bytes, bytes]] | None = None
        self._port: _TestPort | None = None
        self._task: asyncio.Task[None] | None = None

    # The application's life ----------------------------------------------------------

    def _layers(self) -> dict[str, InMemoryChannelLayer]:
        """An in-memory layer for every alias the application may name."""
        from django_ws_client.conf import transport_backends

        aliases = set(transport_backends()) if isinstance(transport_backends(), dict) else set()
        layers = {alias: _memory_layer(alias) for alias in aliases | {"default"}}
        layers[self.alias] = self.channel_layer
        return layers

    async def _start(self) -> None:
        if self._task is not None:
            return
        channel = await self.channel_layer.new_channel("test")
        self._port = _TestPort(self.channel_layer, channel)
        layers = self._layers()

        def run() -> asyncio.Task[None]:
            with ExitStack() as installed:
                for alias, layer in layers.items():
                    installed.enter_context(use_layer(layer, alias))
                installed.enter_context(keeping_connections())
                return asyncio.get_running_loop().create_task(self._run_app())

        self._task = contextvars.copy_context().run(run)

    async def _run_app(self) -> None:
        assert self._port is not None
        try:
            await self.application(self.scope, self._port)
        except _ApplicationFailed as failed:
            raise failed.original from None
        except (DenyConnection, HandshakeRejected) as exc:
            status = exc.status if isinstance(exc, HandshakeRejected) else 403
            await self._port.outputs.put(
                {"type": "websocket.close", "code": status, "reason": str(exc)}
            )

    @property
    def future(self) -> asyncio.Task[None]:
        """The task running the application (asgiref's name)."""
        assert self._task is not None, "call connect() first"
        return self._task

    def _raise_if_finished(self) -> None:
        """As asgiref: an application that has failed fails the next call."""
        if self._task is not None and self._task.done():
            self._task.result()

    async def _cancel(self) -> None:
        assert self._task is not None
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    # Channels' API ------------------------------------------------------------------

    async def send_input(self, message: dict[str, Any]) -> None:
        """Give the application one message (``websocket.connect`` starts it)."""
        if message.get("type") == "websocket.connect" or self._task is None:
            await self._start()
            if message.get("type") == "websocket.connect":
                return
        self._raise_if_finished()
        assert self._port is not None
        if message.get("type") == "websocket.disconnect":
            self._port.deliver_disconnect(message.get("code", 1000))
        elif not self._port.deliver_from_client(message):
            await self._port.wait_for_room()

    async def receive_output(self, timeout: float = 1) -> dict[str, Any]:
        """The next message the application sent (accept, send or close). An exception
        the application raised is raised here; a timeout cancels the application."""
        if self._task is None:
            await self._start()
        assert self._port is not None and self._task is not None
        self._raise_if_finished()
        getter = asyncio.ensure_future(self._port.outputs.get())
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait(
                {getter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not getter.done() and self._task.done():
                if not self._task.cancelled() and self._task.exception() is not None:
                    self._task.result()
                # Finished cleanly: whatever it sent last is still to come, or nothing.
                await asyncio.wait({getter}, timeout=max(0.0, deadline - time.monotonic()))
            if getter.done():
                return getter.result()
        finally:
            if not getter.done():
                getter.cancel()
        if self._task.done():
            self._raise_if_finished()
        else:
            await self._cancel()
        raise TimeoutError()

    async def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        """Open the connection: ``(True, subprotocol)``, or ``(False, code)``."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        assert response["type"] == "websocket.accept"
        self.response_headers = response.get("headers", [])
        return True, response.get("subprotocol")

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send one frame to the application."""
        assert bool(text_data) != bool(bytes_data), (
            "You must supply exactly one of text_data or bytes_data"
        )
        if text_data:
            assert isinstance(text_data, str), "The text_data argument must be a str"
            await self.send_input({"type": "websocket.receive", "text": text_data})
        else:
            assert isinstance(bytes_data, bytes), "The bytes_data argument must be bytes"
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})

    async def send_json_to(self, data: Any) -> None:
        await self.send_to(text_data=json.dumps(data))

    async def receive_from(self, timeout: float = 1) -> str | bytes:
        """The next frame the application sent; fails if it sent something else."""
        response = await self.receive_output(timeout)
        assert response["type"] == "websocket.send", (
            f"Expected type 'websocket.send', but was '{response['type']}'"
        )
        assert ("text" in response) != ("bytes" in response), (
            "The response needs exactly one of 'text' or 'bytes'"
        )
        if "text" in response:
            text = response["text"]
            assert isinstance(text, str), f"Text frame payload is not str, it is {type(text)}"
            return text
        data = response["bytes"]
        assert isinstance(data, bytes), f"Binary frame payload is not bytes, it is {type(data)}"
        return data

    async def receive_json_from(self, timeout: float = 1) -> Any:
        payload = await self.receive_from(timeout)
        assert isinstance(payload, str), f"JSON data is not a text frame, it is {type(payload)}"
        return json.loads(payload)

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """True when the application sends nothing within ``timeout``."""
        self._raise_if_finished()
        assert self._port is not None, "call connect() first"
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not self._port.outputs.empty():
                return False
            await asyncio.sleep(interval)
        return self._port.outputs.empty()

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        """Close from the client side and wait for ``disconnect()`` to finish."""
        if self._port is None or self._task is None:
            return
        try:
            await self.send_input({"type": "websocket.disconnect", "code": code})
            await self.wait(timeout)
        finally:
            self._port.memory_layer.detach(self._port.channel_name)

    async def wait(self, timeout: float = 1) -> None:
        """Wait for the application to finish; re-raises what it raised. On timeout it
        is cancelled and ``TimeoutError`` raised."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(timeout):
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        finally:
            if not self._task.done():
                await self._cancel()

    def stop(self, exceptions: bool = True) -> None:
        """Cancel the application if it runs; else re-raise what it raised."""
        if self._task is None:
            return
        if not self._task.done():
            self._task.cancel()
        elif exceptions:
            self._task.result()
