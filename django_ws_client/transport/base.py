"""The channel layer interface every transport implements.

The method names and rules are Channels' (``group_add``, ``group_discard``,
``group_send``, ``send``, ``new_channel``, ``receive``, ``flush``), with the seed's
conveniences: a consumer may be passed where a channel name is expected, and a
:class:`~django_ws_client.groups.GroupMessage` where a dict event is.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from django_ws_client.exceptions import LifecycleEventRefused
from django_ws_client.groups import GroupMessage
from django_ws_client.transport.config import TransportConfig
from django_ws_proto import codec
from django_ws_proto.names import require_channel_name, require_group_name
from django_ws_proto.v1 import broker_pb2

if TYPE_CHECKING:
    from django_ws_client.presence import Present


def channel_of(target: Any) -> str:
    """A channel name from a channel name or from a consumer (the seed's
    ``group_add(group, self)``)."""
    name = getattr(target, "channel_name", target)
    return require_channel_name(name)


def exclude_list(exclude: Any) -> list[str]:
    """The channel names ``group_send(..., exclude=...)`` names: one channel (or
    consumer), or an iterable of them."""
    if exclude is None:
        return []
    if isinstance(exclude, str) or hasattr(exclude, "channel_name"):
        return [channel_of(exclude)]
    return [channel_of(item) for item in exclude]


LIFECYCLE_PREFIX = "websocket."
"""Event types only the server itself produces, from what happens on the socket."""


def is_lifecycle_type(event_type: object) -> bool:
    """Whether ``event_type`` is one of the server's own ``websocket.*`` events."""
    return isinstance(event_type, str) and event_type.startswith(LIFECYCLE_PREFIX)


def event_from_wire(decoded: codec.DecodedEvent) -> Any:
    """The object a consumer handler receives for a decoded event."""
    if decoded.kind == codec.GROUP_MESSAGE:
        return GroupMessage(
            decoded.type, message=decoded.body.get("message"), params=decoded.body.get("params")
        )
    return decoded.body


def _type_of(event: Any) -> object:
    return event.get("type") if isinstance(event, Mapping) else None


class ChannelLayer(ABC):
    """Group and channel messaging, as Channels' layers offer it."""

    extensions: ClassVar[list[str]] = ["groups", "flush", "members", "presence"]

    def __init__(self, config: TransportConfig) -> None:
        self.config = config
        # channel -> presence info dict its consumer joins presence groups with
        self.presence_infos: dict[str, dict[str, Any] | None] = {}
        self.capacity = config.capacity
        self.expiry = config.expiry
        self.group_expiry = config.group_expiry

    # Channels' validation helpers, kept under their names for ported code.
    def require_valid_group_name(self, name: str) -> bool:
        require_group_name(name)
        return True

    def require_valid_channel_name(self, name: str, receive: bool = False) -> bool:
        require_channel_name(name)
        return True

    def encode_event(self, event: Any) -> broker_pb2.Event:
        """Check and encode an event once, before it goes anywhere.

        Every layer's sends come through here, so this is where a ``websocket.*`` type
        is refused: such an event is the server's word about the socket, and a consumer
        that received one from a group would stop while its socket stayed open."""
        event_type = event.type if isinstance(event, GroupMessage) else _type_of(event)
        if is_lifecycle_type(event_type):
            raise LifecycleEventRefused(
                f"event type {event_type!r} cannot be sent through the channel layer: "
                f"'{LIFECYCLE_PREFIX}*' events come only from the websocket server. To close "
                "another connection, send it your own event type (e.g. 'chat.kick') whose "
                "handler calls self.close()"
            )
        if isinstance(event, GroupMessage):
            return codec.encode_group_message(
                event.type, event.message, event.params, max_bytes=self.config.max_event_bytes
            )
        return codec.encode_dict_event(event, max_bytes=self.config.max_event_bytes)

    @abstractmethod
    async def group_add(self, group: str, channel: Any) -> None:
        """Add a channel (or a consumer) to a group."""

    @abstractmethod
    async def group_discard(self, group: str, channel: Any) -> None:
        """Remove a channel (or a consumer) from a group; a no-op if it is not in it."""

    @abstractmethod
    async def group_send(self, group: str, message: Any, *, exclude: Any = None) -> None:
        """Send an event to every member of a group, wherever it is connected, but
        the channels (or consumers) in ``exclude`` (one, or a list)."""

    async def group_send_many(self, messages: Iterable[tuple[str, Any]]) -> None:
        """Send many (group, event) pairs at once: one request per broker."""
        for group, message in messages:
            await self.group_send(group, message)

    async def user_send(self, user_or_id: Any, message: Any, *, exclude: Any = None) -> None:
        """Send an event to every connection of a user (a user object or its pk),
        wherever it is connected: the user's group (``user.<pk>``)."""
        from django_ws_client.presence import user_group

        await self.group_send(user_group(user_or_id), message, exclude=exclude)

    async def group_size(self, group: str) -> int:
        """How many channels are in ``group`` across the cluster (its owner counts)."""
        raise NotImplementedError(f"{type(self).__name__} cannot count group members")

    async def group_channels(self, group: str) -> list[str]:
        """The channels in ``group`` across the cluster."""
        raise NotImplementedError(f"{type(self).__name__} cannot list group members")

    async def group_presence(self, group: str) -> list[Present]:
        """Who is present in ``group`` (it must have opted in to presence): one entry
        per user with their info dict and connection count."""
        raise NotImplementedError(f"{type(self).__name__} has no presence")

    def set_presence_info(self, channel: Any, info: dict[str, Any] | None) -> None:
        """The info dict ``channel`` joins presence groups with (None: anonymous).
        Consumers set it from ``presence_info()`` when they connect."""
        from django_ws_client.presence import encode_info

        encode_info(self.config, info)  # too large or not a dict: said here, at once
        self.presence_infos[channel_of(channel)] = info

    def presence_member(self, group: str, channel: str) -> tuple[bool, str, bytes]:
        """(presence, user key, info JSON) for ``channel`` joining ``group``."""
        from django_ws_client.presence import encode_info, is_presence_group

        if not is_presence_group(self.config, group):
            return False, "", b""
        user, info = encode_info(self.config, self.presence_infos.get(channel))
        return True, user, info

    @abstractmethod
    async def send(self, channel: str, message: Any) -> None:
        """Send an event to one channel, wherever it is connected."""

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new, unique channel name for this process."""
        return f"{prefix}.{secrets.token_hex(6)}!{secrets.token_hex(10)}"

    async def receive(self, channel: str) -> Any:
        """Wait for the next event on a channel this process created."""
        raise NotImplementedError(
            f"{type(self).__name__} delivers channel events to consumers in the websocket "
            "server; receiving on a channel from another process is not supported"
        )

    async def flush(self) -> None:  # noqa: B027 (optional, as in Channels)
        """Forget everything this layer holds (for tests)."""

    async def close(self) -> None:  # noqa: B027 (optional)
        """Release connections (for process shutdown and tests)."""
