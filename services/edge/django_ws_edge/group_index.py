"""Which local connection is in which group: the edge's membership, with no I/O.

Membership lives here, at the edge, and nowhere else; the broker only learns which
groups have at least one member on this worker. So the index reports the two
transitions that matter to the broker: a group's first local member joined
(subscribe) and its last one left (unsubscribe).
"""

from __future__ import annotations

from collections.abc import Iterable


class GroupIndex:
    """Group -> local channels and channel -> groups, kept in step."""

    def __init__(self) -> None:
        # Dicts as ordered sets: delivery order within a worker is join order.
        self._members: dict[str, dict[str, None]] = {}
        # A channel's groups: the group's name itself while it is in one (most
        # connections are), a set once it is in more. An empty set takes 216 bytes,
        # which thousands of idle connections would each pay for one name.
        self._groups_of: dict[str, str | set[str]] = {}

    def add(self, group: str, channel: str) -> bool:
        """Add ``channel`` to ``group``; True when the group had no local member."""
        members = self._members.get(group)
        first = members is None
        if members is None:
            members = self._members[group] = {}
        members[channel] = None
        groups = self._groups_of.get(channel)
        if groups is None:
            self._groups_of[channel] = group
        elif isinstance(groups, str):
            if groups != group:
                self._groups_of[channel] = {groups, group}
        else:
            groups.add(group)
        return first

    def discard(self, group: str, channel: str) -> bool:
        """Remove ``channel`` from ``group``; True when that emptied the group."""
        members = self._members.get(group)
        if members is None or channel not in members:
            return False
        del members[channel]
        groups = self._groups_of.get(channel)
        if isinstance(groups, str):
            if groups == group:
                del self._groups_of[channel]
        elif groups is not None:
            groups.discard(group)
            if len(groups) == 1:
                self._groups_of[channel] = next(iter(groups))
            elif not groups:
                del self._groups_of[channel]
        if not members:
            del self._members[group]
            return True
        return False

    def remove_channel(self, channel: str) -> list[str]:
        """Remove ``channel`` from all its groups; returns the groups it emptied."""
        emptied = []
        for group in self.groups_of(channel):
            if self.discard(group, channel):
                emptied.append(group)
        return emptied

    def has(self, group: str, channel: str) -> bool:
        members = self._members.get(group)
        return members is not None and channel in members

    def members(self, group: str) -> Iterable[str]:
        """The local channels in ``group`` (a snapshot, safe to iterate while changing)."""
        members = self._members.get(group)
        return tuple(members) if members else ()

    def groups_of(self, channel: str) -> frozenset[str]:
        groups = self._groups_of.get(channel)
        if groups is None:
            return frozenset()
        return frozenset((groups,)) if isinstance(groups, str) else frozenset(groups)

    def groups(self) -> list[str]:
        """Every group with at least one local member."""
        return list(self._members)

    def __contains__(self, group: object) -> bool:
        return group in self._members

    def __len__(self) -> int:
        return len(self._members)
