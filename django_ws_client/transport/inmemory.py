"""An in-process channel layer for tests (Channels' ``InMemoryChannelLayer``).

Nothing crosses a process boundary; events still go through the same encoding, so what
fails here fails in production too. Tests see what they see in Channels' layer:
``groups`` (a dict of group to its channels, with no entry for an empty group),
``channels`` (a dict of channel to the queue of events waiting for ``receive()``),
``new_channel``, ``send``, ``receive``, ``flush``, ``capacity`` and ``expiry``.

Presence groups get ``presence.join`` and ``presence.leave`` events as the broker sends
them: a user's first connection in the group is a join (its own connection included),
its last one leaving is a leave once ``CONFIG['presence_grace_seconds']`` (the broker's 5
by default; 0 in a test that wants the leave at once) passed without it coming back.

Configured in settings, it is only in-process where Django's test environment is set
up; elsewhere (views, the websocket server) the transport builds the embedded broker's
layer instead, so a ``group_send`` from a view is never swallowed by a process that has
no consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from django_ws_client.exceptions import ChannelFull
from django_ws_client.presence import (
    DEFAULT_PRESENCE_GRACE_SECONDS,
    PRESENCE_JOIN,
    PRESENCE_LEAVE,
    Present,
    encode_info,
    require_presence,
)
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


class _PresenceEvents:
    """Who is in each presence group of an in-memory layer, per user, and when a join
    or a leave is due: the broker's rule (first connection joins, the last one leaves
    after the grace period unless the user comes back), for one process."""

    def __init__(self, grace: float, emit: Callable[[str, dict[str, Any]], None]) -> None:
        self.grace = grace
        self.emit = emit
        # group -> user key -> channel -> the info it joined with
        self.users: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        # (group, channel) -> user key, for a channel that leaves
        self.user_of: dict[tuple[str, str], str] = {}
        # (group, user) -> the timer, due time and info of a leave waiting for its grace
        # period (the layer outlives a test's event loop, and its timers with it)
        self.leaving: dict[tuple[str, str], tuple[asyncio.TimerHandle, float, dict[str, Any]]] = {}

    def joined(self, group: str, channel: str, user: str, info: dict[str, Any]) -> None:
        if (group, channel) in self.user_of:
            return
        self.settle()
        self.user_of[(group, channel)] = user
        channels = self.users.setdefault(group, {}).setdefault(user, {})
        first = not channels
        channels[channel] = info
        if first:
            waiting = self.leaving.pop((group, user), None)
            if waiting is not None:
                waiting[0].cancel()  # back within the grace period: no event at all
            else:
                self.emit(group, _presence_event(PRESENCE_JOIN, group, user, info))

    def left(self, group: str, channel: str) -> None:
        user = self.user_of.pop((group, channel), None)
        if user is None:
            return
        users = self.users[group]
        info = users[user].pop(channel)
        if users[user]:
            return
        del users[user]
        if not users:
            del self.users[group]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # no loop left to wait in: the leave is due now
        if self.grace <= 0 or loop is None:
            self.emit(group, _presence_event(PRESENCE_LEAVE, group, user, info))
            return
        timer = loop.call_later(self.grace, self._leave_now, group, user, info)
        self.leaving[(group, user)] = (timer, time.monotonic() + self.grace, info)

    def _leave_now(self, group: str, user: str, info: dict[str, Any]) -> None:
        self.leaving.pop((group, user), None)
        self.emit(group, _presence_event(PRESENCE_LEAVE, group, user, info))

    def settle(self) -> None:
        """Send the leaves already due whose timers could not run (their event loop,
        a finished test's, is closed), so a user who comes back later joins anew."""
        now = time.monotonic()
        for (group, user), (timer, due, info) in list(self.leaving.items()):
            if due <= now:
                timer.cancel()
                self._leave_now(group, user, info)

    def clear(self) -> None:
        for timer, _, _ in self.leaving.values():
            timer.cancel()
        self.leaving.clear()
        self.users.clear()
        self.user_of.clear()


def _presence_event(kind: str, group: str, user: str, info: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "group": group, "user": user, "info": info}


class InMemoryChannelLayer(ChannelLayer):
    """Groups and channels held in this process."""

    def __init__(self, config: TransportConfig | None = None, **config_kwargs: Any) -> None:
        super().__init__(config if config is not None else parse_config(config_kwargs))
        self.groups: dict[str, set[str]] = {}
        self.channels: dict[str, asyncio.Queue[Any]] = {}
        self._consumers: dict[str, Deliver] = {}
        grace = self.config.presence_grace_seconds
        self._presence = _PresenceEvents(
            DEFAULT_PRESENCE_GRACE_SECONDS if grace is None else grace, self._to_members
        )

    def attach(self, channel: str, deliver: Deliver) -> None:
        """Route events for ``channel`` to a consumer's port (used by the communicator)."""
        self._consumers[channel] = deliver

    def detach(self, channel: str) -> None:
        self._consumers.pop(channel, None)
        for group, members in list(self.groups.items()):
            if channel in members:
                members.discard(channel)
                if not members:
                    del self.groups[group]
                self._presence.left(group, channel)
        self.presence_infos.pop(channel, None)

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
        # Too large an info dict is refused here, before the channel joins.
        presence, user, body = self.presence_member(require_group_name(group), name)
        self.groups.setdefault(group, set()).add(name)
        if presence:
            self._presence.joined(group, name, user or name, json.loads(body) if body else {})

    async def group_discard(self, group: str, channel: Any) -> None:
        name = channel_of(channel)
        members = self.groups.get(require_group_name(group))
        if members is not None and name in members:
            members.discard(name)
            if not members:
                del self.groups[group]
            self._presence.left(group, name)

    async def group_send(self, group: str, message: Any, *, exclude: Any = None) -> None:
        require_group_name(group)
        self.encode_event(message)  # refuse a bad event even when the group is empty
        self._to_members(group, message, set(exclude_list(exclude)))

    def _to_members(self, group: str, message: Any, excluded: set[str] | None = None) -> None:
        for channel in list(self.groups.get(group, ())):
            if excluded and channel in excluded:
                continue
            # As in Channels: a full member does not fail the group send.
            with contextlib.suppress(ChannelFull):
                self._deliver(channel, message)

    async def group_size(self, group: str) -> int:
        return len(self.groups.get(require_group_name(group), ()))

    async def group_channels(self, group: str) -> list[str]:
        return sorted(self.groups.get(require_group_name(group), ()))

    async def group_presence(self, group: str) -> list[Present]:
        """Who is present, from the info dicts members joined with; a user whose leave
        waits for its grace period is listed with 0 connections, as the broker does."""
        require_presence(self.config, require_group_name(group))
        self._presence.settle()
        users: dict[str, Present] = {}
        for channel in sorted(self.groups.get(group, ())):
            info = self.presence_infos.get(channel)
            user, _ = encode_info(self.config, info)
            key = user or channel
            seen = users.get(key)
            users[key] = Present(key, dict(info or {}), 1 if seen is None else seen.connections + 1)
        for (leaving_group, user), (_, _, info) in self._presence.leaving.items():
            if leaving_group == group and user not in users:
                users[user] = Present(user, dict(info), 0)
        return list(users.values())

    async def flush(self) -> None:
        self.groups.clear()
        self.channels.clear()
        self._presence.clear()
