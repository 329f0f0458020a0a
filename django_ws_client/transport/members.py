"""Counts, member lists and presence of a group, from the broker that owns it.

Both layers that reach brokers (``GRPCTransportLayer`` in Django processes, the edge's
layer in its workers) ask the group's owner with one ``Members`` call and read its
reply the same way; each only says how it makes the call.
"""

from __future__ import annotations

from abc import abstractmethod

from django_ws_client.presence import Present, decode_present, require_presence
from django_ws_client.transport.base import ChannelLayer
from django_ws_proto.v1 import broker_pb2


class BrokerMembers(ChannelLayer):
    """``group_size``, ``group_channels`` and ``group_presence`` over ``Members``."""

    @abstractmethod
    async def _members(
        self, group: str, *, channels: bool = False, presence: bool = False
    ) -> broker_pb2.MembersReply:
        """Ask the owner of ``group`` (a checked name) for its count, and its channels
        or its present users when asked."""

    async def group_size(self, group: str) -> int:
        return (await self._members(group)).count

    async def group_channels(self, group: str) -> list[str]:
        return list((await self._members(group, channels=True)).channels)

    async def group_presence(self, group: str) -> list[Present]:
        require_presence(self.config, group)
        reply = await self._members(group, presence=True)
        return [decode_present(p.user, p.info, p.connections) for p in reply.present]
