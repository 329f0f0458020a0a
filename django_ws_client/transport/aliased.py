"""Channel layer aliases that share brokers keep their groups apart.

In Channels each alias of ``CHANNEL_LAYERS`` is its own layer: a group ``"room"`` of
alias ``"other"`` is not the group ``"room"`` of ``"default"``. Here aliases that name
the same brokers (the embedded broker, typically) share them, so an alias other than
``"default"`` puts its name in front of its group names, everywhere: in views (the
layer :func:`~django_ws_client.transport.get_channel_layer` builds) and in the websocket
server (the layer a consumer with that ``channel_layer_alias`` is given). Channel names
need nothing: they are unique whoever uses them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django_ws_client.transport.base import ChannelLayer
from django_ws_proto.names import require_group_name

if TYPE_CHECKING:
    from django_ws_client.presence import Present


def group_prefix(alias: str) -> str:
    """What alias ``alias`` puts before its group names ("" for ``"default"``)."""
    return "" if alias == "default" else f"{alias}."


class AliasedLayer(ChannelLayer):
    """Another layer, seen through one alias: group names carry the alias."""

    def __init__(self, inner: ChannelLayer, alias: str) -> None:
        super().__init__(inner.config)
        self.inner = inner
        self.alias = alias
        self.prefix = group_prefix(alias)

    def _group(self, group: str) -> str:
        require_group_name(group)  # the caller's name, checked before the prefix
        return self.prefix + group

    async def group_add(self, group: str, channel: Any, **kwargs: Any) -> None:
        await self.inner.group_add(self._group(group), channel, **kwargs)

    async def group_discard(self, group: str, channel: Any) -> None:
        await self.inner.group_discard(self._group(group), channel)

    async def group_send(self, group: str, message: Any, *, exclude: Any = None) -> None:
        await self.inner.group_send(self._group(group), message, exclude=exclude)

    async def group_send_many(self, messages: Iterable[tuple[str, Any]]) -> None:
        await self.inner.group_send_many((self._group(g), m) for g, m in messages)

    async def group_size(self, group: str) -> int:
        return await self.inner.group_size(self._group(group))

    async def group_channels(self, group: str) -> list[str]:
        return await self.inner.group_channels(self._group(group))

    async def group_presence(self, group: str) -> list[Present]:
        return await self.inner.group_presence(self._group(group))

    def set_presence_info(self, channel: Any, info: dict[str, Any] | None) -> None:
        self.inner.set_presence_info(channel, info)

    async def send(self, channel: str, message: Any) -> None:
        await self.inner.send(channel, message)

    async def new_channel(self, prefix: str = "specific") -> str:
        return await self.inner.new_channel(prefix)

    async def receive(self, channel: str) -> Any:
        return await self.inner.receive(channel)

    async def flush(self) -> None:
        await self.inner.flush()

    async def close(self) -> None:
        await self.inner.close()

    def __repr__(self) -> str:
        return f"<AliasedLayer {self.alias!r} over {self.inner!r}>"
