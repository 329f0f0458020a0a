"""Telling the brokers who the members are: the counts and presence of a group live at
its owner, which hears of each local member joining and leaving.

A member that joined while its broker's link was down is *unannounced*: the next hello
announces it (the broker emits its presence event), while it restores the others
silently. A member the broker refused (a limit) is remembered until the ``group_add``
that waits for it raises.
"""

from __future__ import annotations

from collections.abc import Callable

from django_ws_edge.group_index import GroupIndex
from django_ws_edge.links import BrokerLink
from django_ws_proto.v1 import broker_pb2

PresenceOf = Callable[[str, str], tuple[bool, str, bytes]]
"""(group, channel) -> (presence on, user, info): what a member report carries."""

MAX_REFUSALS = 10_000
"""Refusals kept for a ``group_add`` to raise; past this, nobody waited for them."""


class MemberReports:
    """Member reports to the owning brokers, and what they answered."""

    def __init__(
        self,
        index: GroupIndex,
        *,
        presence_of: PresenceOf,
        link_for: Callable[[str], BrokerLink],
    ) -> None:
        self.index = index
        self._presence_of = presence_of
        self._link_for = link_for
        self._unannounced: set[tuple[str, str]] = set()
        self._refusals: dict[tuple[str, str], str] = {}

    def member(self, group: str, channel: str, *, restored: bool) -> broker_pb2.Member:
        presence, user, info = self._presence_of(group, channel)
        return broker_pb2.Member(
            group=group,
            channel=channel,
            user=user,
            info=info,
            presence=presence,
            restored=restored,
        )

    def joined(self, group: str, channel: str) -> None:
        if not self._link_for(group).member(self.member(group, channel, restored=False)):
            self._unannounced.add((group, channel))

    def left(self, group: str, channel: str) -> None:
        self._unannounced.discard((group, channel))
        self._link_for(group).member(broker_pb2.Member(group=group, channel=channel, left=True))

    def for_hello(self, groups: list[str]) -> list[broker_pb2.Member]:
        """Every member of ``groups`` (those a broker owns), for its hello: those the
        broker heard of before are restored (no presence event)."""
        members = []
        for group in groups:
            for channel in self.index.members(group):
                key = (group, channel)
                members.append(self.member(group, channel, restored=key not in self._unannounced))
                self._unannounced.discard(key)
        return members

    def restore(self, link: BrokerLink, group: str) -> None:
        """Report the group's members to ``link``'s broker again, silently."""
        for channel in self.index.members(group):
            link.member(self.member(group, channel, restored=True))

    def refused(self, group: str, channel: str, reason: str) -> None:
        self._refusals[(group, channel)] = reason
        if len(self._refusals) > MAX_REFUSALS:
            self._refusals.clear()

    def take_refusal(self, group: str, channel: str) -> str | None:
        """Why the broker refused ``channel`` in ``group``, once; None if it did not."""
        return self._refusals.pop((group, channel), None)
