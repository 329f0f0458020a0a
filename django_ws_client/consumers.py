"""Consumers: the classes a Django app subclasses to handle websocket connections.

The names and methods are Django Channels' (``AsyncWebsocketConsumer``,
``AsyncJsonWebsocketConsumer``, ``WebsocketConsumer``, ``JsonWebsocketConsumer``), so a
Channels consumer ports by changing its imports; ``BaseConsumer`` is the seed's name
for the async one. Every event, from the socket or from a group, goes through
:meth:`AsyncConsumer.dispatch`, which calls the method its ``type`` names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from asgiref.sync import async_to_sync

from django_ws_client.db import database_sync_to_async
from django_ws_client.exceptions import (
    AcceptConnection,
    DenyConnection,
    InvalidChannelLayerError,
    StopConsumer,
)
from django_ws_client.groups import GroupMessage
from django_ws_client.positions import GAP_EVENT_TYPE, format_position
from django_ws_client.presence import PRESENCE_TYPES, default_info, require_presence, user_group
from django_ws_proto.names import handler_name

if TYPE_CHECKING:
    from django_ws_client.connection import ConnectionPort
    from django_ws_client.transport.base import ChannelLayer

Scope = dict[str, Any]

logger = logging.getLogger("django_ws.consumer")


class ConsumerHandler:
    """What ``as_handler()`` returns and a route points at: makes one consumer per
    connection and runs it on the connection's port."""

    def __init__(self, consumer_class: type[AsyncConsumer], initkwargs: dict[str, Any]) -> None:
        self.consumer_class = consumer_class
        self.initkwargs = initkwargs

    def __call__(self, scope: Scope, port: ConnectionPort) -> Awaitable[None]:
        return self.consumer_class(**self.initkwargs)(scope, port)

    def __repr__(self) -> str:
        return f"<ConsumerHandler {self.consumer_class.__qualname__}>"


def layer_for(consumer: AsyncConsumer, port: ConnectionPort) -> ChannelLayer:
    """The layer a consumer talks to: the one of its ``channel_layer_alias``.

    The connection's own layer serves the alias the server (or the communicator) was
    given; a consumer naming an alias nobody here serves is refused by name rather
    than given a layer whose events would never reach it.
    """
    from django_ws_client.transport import served_layer, serving_any_layer

    alias = consumer.channel_layer_alias
    layer = served_layer(alias)
    if layer is not None and getattr(layer, "inner", None) is port.layer:
        return layer  # an alias sharing the server's brokers, with its own group names
    if layer is None or layer is port.layer:
        if layer is None and serving_any_layer():
            raise InvalidChannelLayerError(
                f"{type(consumer).__qualname__} uses channel_layer_alias {alias!r}, which this "
                f"server does not serve: run a websockets_server with --alias {alias} for its "
                "routes"
            )
        return port.layer
    bind = getattr(port, "bind_layer", None)
    if bind is None:
        raise InvalidChannelLayerError(
            f"{type(consumer).__qualname__} uses channel_layer_alias {alias!r}, but this "
            f"connection is served by another alias's layer: run a websockets_server with "
            f"--alias {alias} for its routes"
        )
    bound: ChannelLayer = bind(layer)
    return bound


class AsyncConsumer:
    """Dispatches events by type to methods: ``chat.message`` calls ``chat_message``."""

    channel_layer_alias: ClassVar[str] = "default"
    user_group: str | None = None
    """The group of this connection's user (``user.<pk>``), joined on connect so that
    ``channel_layer.user_send(user, event)`` reaches it; None when anonymous or when
    ``WEBSOCKET_USER_GROUPS`` is False."""
    scope: Scope
    channel_layer: ChannelLayer
    channel_name: str
    base_port: ConnectionPort

    def __init__(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __call__(self, scope: Scope, port: ConnectionPort) -> Awaitable[None]:
        """Run this consumer on one connection. A consumer *instance* is an application,
        as in Channels (``WebsocketCommunicator(MyConsumer(), "/")``,
        ``path("ws/", MyConsumer())``); ``as_handler()`` makes a fresh one per connection."""
        self.scope = scope
        self.channel_layer = layer_for(self, port)
        self.channel_name = port.channel_name
        self.base_port = port
        return port.run(self)

    @classmethod
    def as_handler(cls, **initkwargs: Any) -> ConsumerHandler:
        """The callable a route points at (``re_path(r"...", MyConsumer.as_handler())``)."""
        for key in initkwargs:
            if not hasattr(cls, key):
                raise TypeError(f"{cls.__qualname__}.as_handler() got an unknown keyword {key!r}")
        return ConsumerHandler(cls, initkwargs)

    # Channels' name, so routing lines port unchanged.
    as_asgi = as_handler

    def handler_for(self, event: Any) -> Any:
        """The method that handles ``event`` (a dict with a ``type``, or a GroupMessage);
        a clear error naming the type when there is none. None for a ``group.gap``
        event the consumer does not handle: that is logged, not an error."""
        event_type = event.type if isinstance(event, GroupMessage) else event["type"]
        name = handler_name(event_type)
        if event_type == GAP_EVENT_TYPE and event.get("group") == self.__dict__.get("user_group"):
            # The user's own group (joined for user_send) is not one the consumer's
            # code knows of: its gaps go to user_gap(), when defined.
            name = "user_gap"
            if getattr(self, name, None) is None:
                logger.info("%s may have missed user_send events", self.channel_name)
                return None
        handler = getattr(self, name, None) if not name.startswith("_") else None
        if handler is None:
            if event_type in PRESENCE_TYPES:
                return None  # presence events are for consumers that want them
            if event_type == GAP_EVENT_TYPE:
                logger.info(
                    "%s on %s may have missed events of %r (%s); define group_gap() to "
                    "reload its state",
                    type(self).__qualname__,
                    self.channel_name,
                    event.get("group"),
                    event.get("reason"),
                )
                return None
            raise ValueError(
                f"{type(self).__qualname__} has no handler for event type {event_type!r} "
                f"(define a method named {name!r})"
            )
        return handler

    async def dispatch(self, event: Any) -> None:
        """Call the handler for ``event``."""
        handler = self.handler_for(event)
        if handler is not None:
            await handler(event)

    def group_position(self, group: str) -> str | None:
        """The position of the last event this consumer got from ``group`` (while a
        handler runs, of the event it handles), as a string to hand to the client. A
        reconnecting client gives it back and the consumer joins with
        ``group_add(group, self.channel_name, since=position)`` to get what it missed.
        None before any event of the group."""
        position = self.base_port.position(group)
        return None if position is None else format_position(*position)

    def presence_info(self) -> dict[str, Any] | None:
        """The info dict this connection joins presence groups with. By default the id
        and display name of the authenticated ``scope["user"]``; None (anonymous)
        makes each connection its own entry. Override to add (small) fields."""
        return default_info(self.scope)

    def own_groups(self) -> list[tuple[str, bool]]:
        """(group, presence) for the groups joined on connect: the user's own group
        (``user_send``; unless ``WEBSOCKET_USER_GROUPS = False``), ``groups`` and
        ``presence_groups``."""
        from django_ws_client.conf import user_groups_enabled

        joined: list[tuple[str, bool]] = []
        user = self.scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False) and user_groups_enabled():
            self.user_group = user_group(user)
            joined.append((self.user_group, False))
        joined.extend((group, False) for group in getattr(self, "groups", ()))
        joined.extend((group, True) for group in getattr(self, "presence_groups", ()))
        return joined

    async def join_own_groups(self) -> None:
        layer = self.channel_layer
        layer.set_presence_info(self.channel_name, self.presence_info())
        for group, presence in self.own_groups():
            if presence:
                require_presence(layer.config, group, self.channel_layer_alias)
            await layer.group_add(group, self.channel_name)

    async def leave_own_groups(self) -> None:
        for group, _presence in self.own_groups():
            await self.channel_layer.group_discard(group, self.channel_name)


class AsyncWebsocketConsumer(AsyncConsumer):
    """A websocket consumer with async handlers (Channels' ``AsyncWebsocketConsumer``)."""

    groups: ClassVar[list[str] | tuple[str, ...]] = ()
    presence_groups: ClassVar[list[str] | tuple[str, ...]] = ()
    """Groups joined on connect with presence (each must match the layer's
    ``CONFIG['presence_groups']``; system check ``django_ws.E020``)."""

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        await self.join_own_groups()
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def connect(self) -> None:
        """Called on the handshake. Accept or close here; returning without either
        accepts (so the seed's consumers work); raising rejects with HTTP 500."""
        await self.accept()

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Accept the handshake, optionally choosing one of the client's subprotocols."""
        await self.base_port.accept(subprotocol, headers)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if message.get("text") is not None:
            await self.receive(text_data=message["text"])
        else:
            await self.receive(bytes_data=message.get("bytes"))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each message from the client."""

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """Send a text or binary message; ``close=True`` closes afterwards."""
        if text_data is not None:
            await self.base_port.send(text_data)
        elif bytes_data is not None:
            await self.base_port.send(bytes_data)
        else:
            raise ValueError("send() needs text_data or bytes_data")
        if close:
            await self.close(close if isinstance(close, int) and close is not True else None)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the connection; before ``accept`` this rejects the handshake (403)."""
        await self.base_port.close(code, reason)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.leave_own_groups()
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        """Called once when the connection has closed, whoever closed it."""


BaseConsumer = AsyncWebsocketConsumer
"""The seed's name for the async websocket consumer."""


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """Decodes text frames as JSON for ``receive_json`` and encodes ``send_json``."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            raise ValueError("no text section for incoming WebSocket frame")
        await self.receive_json(await self.decode_json(text_data))

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded JSON message from the client."""

    async def send_json(self, content: Any, close: bool = False) -> None:
        await super().send(text_data=await self.encode_json(content), close=close)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content)


class SyncConsumer(AsyncConsumer):
    """Runs handlers in a worker thread, so they may use the ORM directly."""

    async def dispatch(self, event: Any) -> None:
        await database_sync_to_async(self._dispatch_sync)(event)

    def _dispatch_sync(self, event: Any) -> None:
        handler = self.handler_for(event)
        if handler is not None:
            handler(event)


class WebsocketConsumer(SyncConsumer):
    """A websocket consumer with sync handlers (Channels' ``WebsocketConsumer``)."""

    groups: ClassVar[list[str] | tuple[str, ...]] = ()
    presence_groups: ClassVar[list[str] | tuple[str, ...]] = ()

    def websocket_connect(self, message: dict[str, Any]) -> None:
        async_to_sync(self.join_own_groups)()
        try:
            self.connect()
        except AcceptConnection:
            self.accept()
        except DenyConnection:
            self.close()

    def connect(self) -> None:
        self.accept()

    def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None
    ) -> None:
        async_to_sync(self.base_port.accept)(subprotocol, headers)

    def websocket_receive(self, message: dict[str, Any]) -> None:
        if message.get("text") is not None:
            self.receive(text_data=message["text"])
        else:
            self.receive(bytes_data=message.get("bytes"))

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each message from the client."""

    def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        if text_data is not None:
            async_to_sync(self.base_port.send)(text_data)
        elif bytes_data is not None:
            async_to_sync(self.base_port.send)(bytes_data)
        else:
            raise ValueError("send() needs text_data or bytes_data")
        if close:
            self.close(close if isinstance(close, int) and close is not True else None)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        async_to_sync(self.base_port.close)(code, reason)

    def websocket_disconnect(self, message: dict[str, Any]) -> None:
        async_to_sync(self.leave_own_groups)()
        self.disconnect(message["code"])
        raise StopConsumer()

    def disconnect(self, code: int) -> None:
        """Called once when the connection has closed."""


class JsonWebsocketConsumer(WebsocketConsumer):
    """The sync JSON consumer (Channels' ``JsonWebsocketConsumer``)."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            raise ValueError("no text section for incoming WebSocket frame")
        self.receive_json(self.decode_json(text_data))

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded JSON message from the client."""

    def send_json(self, content: Any, close: bool = False) -> None:
        super().send(text_data=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content)
