"""Who is in each group, as the edges report it: counts, member lists and presence.

Membership lives at the edge; the owning shard keeps a copy of it so that counts,
member lists and presence have one source of truth. The copy is never used for
fan-out (a publish still goes once per subscribed edge stream), and it is rebuilt from
the edges: their hello carries every member they hold, marked *restored*, so a broker
that restarted or took over a group after a reshard knows everybody again without
announcing anybody.

Presence is per user: a user's first connection in a group is a ``presence.join``
event, its last one leaving is a ``presence.leave`` event once ``grace`` seconds have
passed without the user coming back, so a quick reconnect (or a worker that relinks)
makes no event at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django_ws_proto.names import channel_home, channel_name_error
from django_ws_proto.v1 import broker_pb2

DEFAULT_MAX_GROUP_MEMBERS = 100_000
"""Members one group may have (all edges together); past it, joins are refused."""

DEFAULT_PRESENCE_GRACE_SECONDS = 5.0
"""How long a user's last connection may be gone before its ``presence.leave``."""

MAX_INFO_BYTES = 16 * 1024
"""Largest presence info dict (JSON) the broker keeps for one member."""

PRESENCE_JOIN = "presence.join"
PRESENCE_LEAVE = "presence.leave"


@dataclass
class MemberEntry:
    edge_id: str
    user: str
    info: bytes


@dataclass
class PendingLeave:
    due: float
    info: bytes


@dataclass
class GroupMembers:
    """One group's members (channel -> entry) and, with presence, its users."""

    presence: bool = False
    channels: dict[str, MemberEntry] = field(default_factory=dict)
    # user -> their channels in this group (presence groups only)
    users: dict[str, dict[str, None]] = field(default_factory=dict)
    # user -> their leave, waiting for the grace period to pass
    pending: dict[str, PendingLeave] = field(default_factory=dict)


Emit = Callable[[str, broker_pb2.Event], None]
"""Publishes an event to a group (through the shard, so it is numbered in order)."""


def presence_event(kind: str, group: str, user: str, info: bytes) -> broker_pb2.Event:
    """A ``presence.join`` / ``presence.leave`` dict event, encoded as senders do."""
    try:
        decoded = json.loads(info) if info else {}
    except ValueError:
        decoded = {}
    body = json.dumps(
        {"type": kind, "group": group, "user": user, "info": decoded},
        separators=(",", ":"),
    ).encode()
    return broker_pb2.Event(type=kind, kind=broker_pb2.EVENT_KIND_DICT, body=body)


class Membership:
    """Every group's members on this shard, and the presence events they cause."""

    def __init__(
        self,
        emit: Emit,
        *,
        max_group_members: int = DEFAULT_MAX_GROUP_MEMBERS,
        grace: float = DEFAULT_PRESENCE_GRACE_SECONDS,
    ) -> None:
        self.emit = emit
        self.max_group_members = max_group_members
        self.grace = grace
        self.groups: dict[str, GroupMembers] = {}
        # edge id -> (group, channel) it reported, so a stream that ends takes them along
        self.by_edge: dict[str, set[tuple[str, str]]] = {}
        # groups with leaves waiting for their grace period
        self.pending: set[str] = set()
        self.joins = 0
        self.leaves = 0
        self.refused = 0

    @property
    def count(self) -> int:
        return sum(len(g.channels) for g in self.groups.values())

    def apply(
        self, edge_id: str, member: broker_pb2.Member, now: float | None = None
    ) -> str | None:
        """Apply one member change reported by ``edge_id``; the refusal reason, if any."""
        channel, group = member.channel, member.group
        error = channel_name_error(channel)
        if error is None and channel_home(channel) != edge_id:
            error = (
                f"channel {channel[:120]!r} is not a channel of edge {edge_id!r}: an edge "
                "reports only its own members"
            )
        if error is None and len(member.info) > MAX_INFO_BYTES:
            error = (
                f"presence info too large: {len(member.info)} bytes, over the broker's "
                f"{MAX_INFO_BYTES}"
            )
        if error is not None:
            self.refused += 1
            return error
        if member.left:
            self.remove(group, channel, now)
            return None
        members = self.groups.get(group)
        if members is None:
            members = self.groups[group] = GroupMembers(presence=member.presence)
        entry = members.channels.get(channel)
        if entry is None and len(members.channels) >= self.max_group_members:
            self.refused += 1
            if not members.channels:
                del self.groups[group]
            return (
                f"member limit reached: group {group!r} has {len(members.channels)} members, "
                f"the most this broker allows (--max-group-members {self.max_group_members})"
            )
        members.presence = members.presence or member.presence
        user = member.user or channel
        if entry is not None and entry.user != user:
            self.remove(group, channel, now)
            return self.apply(edge_id, member, now)
        members.channels[channel] = MemberEntry(edge_id, user, bytes(member.info))
        self.by_edge.setdefault(edge_id, set()).add((group, channel))
        if members.presence and entry is None:
            channels = members.users.setdefault(user, {})
            first = not channels
            channels[channel] = None
            if first:
                pending = members.pending.pop(user, None)
                if pending is None and not member.restored:
                    self.joins += 1
                    self.emit(group, presence_event(PRESENCE_JOIN, group, user, member.info))
        return None

    def remove(self, group: str, channel: str, now: float | None = None) -> None:
        """A member left (or its edge's stream ended): forget it; a user whose last
        connection this was leaves after the grace period, unless it comes back."""
        members = self.groups.get(group)
        if members is None:
            return
        entry = members.channels.pop(channel, None)
        if entry is None:
            return
        edge_members = self.by_edge.get(entry.edge_id)
        if edge_members is not None:
            edge_members.discard((group, channel))
            if not edge_members:
                del self.by_edge[entry.edge_id]
        if members.presence:
            channels = members.users.get(entry.user)
            if channels is not None:
                channels.pop(channel, None)
                if not channels:
                    del members.users[entry.user]
                    now = time.monotonic() if now is None else now
                    members.pending[entry.user] = PendingLeave(now + self.grace, entry.info)
                    self.pending.add(group)
        if not members.channels and not members.pending:
            del self.groups[group]

    def drop_edge(self, edge_id: str, now: float | None = None) -> None:
        """An edge stream ended: its members are gone (their users leave after grace)."""
        for group, channel in list(self.by_edge.get(edge_id, ())):
            self.remove(group, channel, now)

    def tick(self, now: float | None = None) -> int:
        """Emit the leaves whose grace period is over; returns how many."""
        if not self.pending:
            return 0
        now = time.monotonic() if now is None else now
        emitted = 0
        for group in list(self.pending):
            members = self.groups.get(group)
            if members is None:
                self.pending.discard(group)
                continue
            for user, leave in list(members.pending.items()):
                if leave.due <= now:
                    del members.pending[user]
                    emitted += 1
                    self.leaves += 1
                    self.emit(group, presence_event(PRESENCE_LEAVE, group, user, leave.info))
            if not members.pending:
                self.pending.discard(group)
                if not members.channels:
                    del self.groups[group]
        return emitted

    def release(self, keep: Callable[[str], bool]) -> None:
        """Forget, with no event, every group ``keep`` says is no longer owned here."""
        for group in [g for g in self.groups if not keep(g)]:
            for channel, entry in self.groups.pop(group).channels.items():
                edge_members = self.by_edge.get(entry.edge_id)
                if edge_members is not None:
                    edge_members.discard((group, channel))
                    if not edge_members:
                        del self.by_edge[entry.edge_id]
        self.pending = {g for g in self.pending if g in self.groups}

    def answer(self, request: broker_pb2.MembersRequest) -> broker_pb2.MembersReply:
        members = self.groups.get(request.group)
        reply = broker_pb2.MembersReply()
        if members is None:
            return reply
        reply.count = len(members.channels)
        reply.presence = members.presence
        if request.channels:
            reply.channels.extend(members.channels)
        if request.presence and members.presence:
            for user, channels in members.users.items():
                first = members.channels[next(iter(channels))]
                reply.present.append(
                    broker_pb2.PresentUser(user=user, info=first.info, connections=len(channels))
                )
            # Gone, but within the grace period: still present until their leave event,
            # so the list and the events agree (0 connections says they may be back).
            for user, leave in members.pending.items():
                reply.present.append(broker_pb2.PresentUser(user=user, info=leave.info))
        return reply
