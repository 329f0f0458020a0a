"""An in-process channel layer for tests (Channels' ``InMemoryChannelLayer``).

Nothing crosses a process boundary; events still go through the same encoding, so what
fails here fails in production too. Tests see what they see in Channels' layer:
``groups`` (a dict of group to its channels, with no entry for an empty group),
``channels`` (a dict of channel to the queue of events waiting for ``receive()``),
``new_channel``, ``send``, ``receive``, ``flush``, ``capacity`` and ``expiry``.

Configured in settings, it is only in-process where Django's test environment is set
up; elsewhere (views, the websocket server) the transport builds the embedded broker's
layer instead, so a ``group_send`` from a view is never swallowed by a process that has
no consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from django_ws_client.exceptions import ChannelFull
from django_ws_client.presence import Present, encode_info, require_presence
from django_ws_client.transport.base import (
    ChannelLayer,
    channel_of,
    event_from_wire,
    exclude_list,
)
from django_ws_client.transport.config import TransportConfig, parse_config
from django_ws_proto import codec
from django_ws_proto.names import require_group_name

Deliver = Callable[[Any], bool]


class InMemoryChannelLayer(ChannelLayer):
    """Groups and channels held in this process."""

    def __init__(self, config: TransportConfig | None = None, **config_kwargs: Any) -> None:
        super().__init__(config if config is not None else parse_config(config_kwargs))
        self.groups: dict[str, set[str]] = {}
        self.channels: dict[str, asyncio.Queue[Any]] = {}
        self._consumers: dict[str, Deliver] = {}

    def attach(self, channel: str, deliver: Deliver) -> None:
        """Route events for ``channel`` to a consumer's port (used by the communicator)."""
        self._consumers[channel] = deliver

    def detach(self, channel: str) -> None:
        self._consumers.pop(channel, None)
        self.presence_infos.pop(channel, None)
        for group, members in list(self.groups.items()):
            members.discard(channel)
            if not members:
                del self.groups[group]

    def _decode(self, message: Any) -> Any:
        return event_from_wire(codec.decode(self.encode_event(message)))

    def _deliver(self, channel: str, message: Any) -> None:
        deliver = self._consumers.get(channel)
        if deliver is not None:
            if not deliver(self._decode(message)):
                raise ChannelFull(f"channel {channel!r} is over its capacity of {self.capacity}")
            return
        queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.capacity))
        try:
            queue.put_nowait(self._decode(message))
        except asyncio.QueueFull:
            raise ChannelFull(
                f"channel {channel!r} is over its capacity of {self.capacity}"
            ) from None

    async def send(self, channel: str, message: Any) -> None:
        self._deliver(channel_of(channel), message)

    async def receive(self, channel: str) -> Any:
        queue = self.channels.setdefault(channel_of(channel), asyncio.Queue(maxsize=self.capacity))
        return await queue.get()

    async def group_add(
        self, group: str, channel: Any, *, info: dict[str, Any] | None = None
    ) -> None:
        name = channel_of(channel)
        if info is not None:
            self.set_presence_info(name, info)
        self.presence_member(require_group_name(group), name)  # too large: refused here
        self.groups.setdefault(group, set()).add(name)

    async def group_discard(self, group: str, channel: Any) -> None:
        members = self.groups.get(require_group_name(group))
        if members is not None:
            members.discard(channel_of(channel))
            if not members:
                del self.groups[group]

    async def group_send(self, group: str, message: Any, *, exclude: Any = None) -> None:
        require_group_name(group)
        self.encode_event(message)  # refuse a bad event even when the group is empty
        excluded = set(exclude_list(exclude))
        for channel in list(self.groups.get(group, ())):
            if channel in excluded:
                continue
            # As in Channels: a full member does not fail the group send.
            with contextlib.suppress(ChannelFull):
                self._deliver(channel, message)

    async def group_size(self, group: str) -> int:
        return len(self.groups.get(require_group_name(group), ()))

    async def group_channels(self, group: str) -> list[str]:
        return sorted(self.groups.get(require_group_name(group), ()))

    async def group_presence(self, group: str) -> list[Present]:
        """Who is present, from the info dicts members joined with (this layer sends
        no presence events: it has no broker to coalesce them)."""
        require_presence(self.config, require_group_name(group))
        users: dict[str, Present] = {}
        for channel in sorted(self.groups.get(group, ())):
            info = self.presence_infos.get(channel)
            user, _ = encode_info(self.config, info)
            key = user or channel
            seen = users.get(key)
            users[key] = Present(key, dict(info or {}), 1 if seen is None else seen.connections + 1)
        return list(users.values())

    async def flush(self) -> None:
        self.groups.clear()
        self.channels.clear()
