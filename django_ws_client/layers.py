"""``CHANNEL_LAYERS`` backend for unchanged Channels projects: the django-ws broker
instead of Redis.

.. code-block:: python

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "django_ws_client.layers.GRPCChannelLayer",
            "CONFIG": {"brokers": ["broker-0:50051", "broker-1:50051"]},
        }
    }

CONFIG takes what ``WEBSOCKET_TRANSPORT_BACKENDS`` takes (an address, a brokers list or
a template with a shard count, TLS, timeouts, the role secret), plus Channels' own
``capacity``, ``expiry``, ``group_expiry`` and ``channel_capacity``.

Each process (each ASGI worker) talks to the brokers the way a django-ws edge worker
does, because it is one: the layer runs a
:class:`~django_ws_edge.process_layer.ProcessChannelLayer` whose channels are the
``new_channel()`` receive queues of the process's consumers. One stream per broker, one
subscription per group with local members, fan-out in the process, publishes kept until
acknowledged and sent again after a reconnect, cursors resumed after a broker restart.

That core is made on first use in the running event loop. Another loop (a test
framework makes one per test; ``async_to_sync`` in sync code makes one per call) gets
its own, as does a forked child (gunicorn's ``--preload``, multiprocessing): sockets of
another loop or of the parent are never used. What differs from Channels' specification
is listed in ``docs/drop-in-layer.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import types
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from channels import exceptions as channels_exceptions
from channels.layers import BaseChannelLayer

from django_ws_client import exceptions
from django_ws_client.transport.config import TransportConfig, parse_config

if TYPE_CHECKING:
    from django_ws_client.presence import Present
    from django_ws_edge.process_layer import ProcessChannelLayer

__all__ = ["ChannelFull", "GRPCChannelLayer"]

SETTING = "CHANNEL_LAYERS[...]['CONFIG'] of django_ws_client.layers.GRPCChannelLayer"


class ChannelFull(channels_exceptions.ChannelFull, exceptions.ChannelFull):
    """A send to a full receive queue: Channels' ``ChannelFull`` and django-ws' both."""


class _Forks:
    """What a fork leaves the child: gRPC cannot be used in a process forked while
    the parent had gRPC streams open (its threads were inside gRPC), and can once the
    parent's are closed and collected.

    So before a fork of a process that used the layer, streams all closed: collect them
    (gRPC's asyncio support then shuts down, and the child starts its own). Streams
    still open: the child's first call says so instead of hanging.
    """

    def __init__(self) -> None:
        self.cores: weakref.WeakSet[ProcessChannelLayer] = weakref.WeakSet()
        self.used = False
        self.open_at_fork = False
        self.parent_pid = 0
        self.inherited_open_streams_from: int | None = None

    def before(self) -> None:
        if not self.used:
            return
        self.parent_pid = os.getpid()
        self.open_at_fork = any(not core.closed for core in self.cores)
        if not self.open_at_fork:
            gc.collect()

    def in_child(self) -> None:
        if self.used and self.open_at_fork:
            self.inherited_open_streams_from = self.parent_pid
        self.cores = weakref.WeakSet()

    def check_child(self) -> None:
        parent = self.inherited_open_streams_from
        if parent is not None:
            raise RuntimeError(
                f"this process was forked from process {parent} while GRPCChannelLayer "
                "streams were open there, and gRPC cannot be used in such a child. Close "
                "the layer before forking (`await layer.close()`), or use it first after "
                "the fork (gunicorn --preload is fine while the master does not use it)"
            )


_forks = _Forks()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_forks.before, after_in_child=_forks.in_child)


class GRPCChannelLayer(BaseChannelLayer):
    """Channels' channel layer specification over django-ws brokers (see the module)."""

    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[Any, int] | None = None,
        gap_events: bool = False,
        **config: Any,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity)
        self.group_expiry = group_expiry
        # Whether receive queues get django-ws' group.gap events (consumers then need a
        # group_gap handler); off, a loss is only counted.
        self.gap_events = bool(gap_events)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.config: TransportConfig = parse_config(
            {**config, "capacity": capacity, "expiry": expiry, "group_expiry": group_expiry},
            setting=SETTING,
        )
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._cores: dict[asyncio.AbstractEventLoop, ProcessChannelLayer] = {}

    # The core of this process and event loop ---------------------------------------

    def _core(self) -> ProcessChannelLayer:
        """This process' and this event loop's core, started on first use."""
        loop = asyncio.get_running_loop()
        _forks.check_child()
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's streams and loops are not ours to touch
                # (nor to close); this process starts its own.
                self._cores, self._pid = {}, os.getpid()
            core = self._cores.get(loop)
            if core is None:
                for other in [other for other in self._cores if other.is_closed()]:
                    del self._cores[other]
                from django_ws_edge.process_layer import ProcessChannelLayer

                core = ProcessChannelLayer(
                    self.config, capacity_of=self.get_capacity, gap_events=self.gap_events
                )
                core.start()
                _forks.used = True
                _forks.cores.add(core)
                self._cores[loop] = core
                _close_with_loop(self, loop)
            return core

    def _take_core(self, loop: asyncio.AbstractEventLoop) -> ProcessChannelLayer | None:
        with self._lock:
            if self._pid != os.getpid():
                return None
            return self._cores.pop(loop, None)

    def get_capacity(self, channel: str) -> int:
        """Channels' per-channel capacity, matched against the whole name and against
        the part after ``!`` (``new_channel(prefix)`` puts the prefix there)."""
        local = channel.partition("!")[2]
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel) or (local and pattern.match(local)):
                return int(capacity)
        return int(self.capacity)

    @staticmethod
    def _require_specific(channel: str) -> None:
        if "!" not in channel:
            raise ValueError(
                f"{channel!r} is a normal channel (no '!'); GRPCChannelLayer carries only "
                "process-specific channels, the names new_channel() returns, which every "
                "consumer has. Normal channels read by `runworker` are not supported: run "
                "that work in a task queue, or keep another layer alias for it"
            )

    # Channels' specification -------------------------------------------------------

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send to one channel of this or any other process (or a django-ws edge).

        A receive queue of this process that is full raises :class:`ChannelFull`; one of
        another process drops the message there and counts it. Returns once the broker
        has the message (a local one: once it is queued)."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        self._require_specific(channel)
        assert "__asgi_channel__" not in message
        try:
            await self._core().send(channel, message)
        except exceptions.ChannelFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> Any:
        """The next message of a channel ``new_channel()`` made in this process and
        event loop."""
        self.require_valid_channel_name(channel)
        self._require_specific(channel)
        core = self._core()
        if not core.local.holds(channel):
            raise ValueError(
                f"{channel!r} was not made by new_channel() of this layer in this process "
                "and event loop (or was forgotten: nobody read it for `expiry` seconds, or "
                "flush() ran): only the process holding a channel can receive from it"
            )
        return await core.receive(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new channel of this process, for :meth:`receive`: ``<process id>!<prefix>.
        <random>``, where the part before ``!`` routes messages to this process."""
        prefix = prefix.rstrip(".") or "specific"
        name = await self._core().new_channel(prefix)
        try:
            self.require_valid_channel_name(name)
        except TypeError:
            self._core().unregister(name)
            raise
        return name

    async def group_add(
        self,
        group: str,
        channel: str,
        *,
        since: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        """Add a channel to a group; once it returns, the channel receives the group's
        messages. ``since`` (a position) and ``info`` (presence) are django-ws
        extensions, for channels of this process."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._require_specific(channel)
        await self._core().group_add(group, channel, since=since, info=info)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_channel_name(channel)
        self.require_valid_group_name(group)
        self._require_specific(channel)
        await self._core().group_discard(group, channel)

    async def group_send(self, group: str, message: dict[str, Any], *, exclude: Any = None) -> None:
        """Send to every member of a group, in every process and on every edge, but the
        channels in ``exclude`` (a django-ws extension). Returns once the group's broker
        has the message; members whose queue is full miss it (counted), as in Channels."""
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        await self._core().group_send(group, message, exclude=exclude)

    async def flush(self) -> None:
        """Forget every channel and group membership of this layer in this process: its
        streams close (the brokers drop its subscriptions and members), and the next
        call starts afresh."""
        await self.close()

    async def close(self) -> None:
        """Close this layer's streams in this process: the current loop's here, another
        running loop's in that loop; those of closed loops are gone already."""
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        with self._lock:
            cores = self._cores if self._pid == os.getpid() else {}
            self._cores = {}
            self._pid = os.getpid()
        for loop, core in cores.items():
            if loop is current:
                await core.close()
            elif not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(core.close(), loop)

    # django-ws extensions ------------------------------------------------------------

    async def group_send_many(self, messages: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Many (group, message) pairs: one frame per broker, one wait for all."""
        pairs = list(messages)
        for group, message in pairs:
            assert isinstance(message, dict), "Message is not a dict"
            self.require_valid_group_name(group)
        await self._core().group_send_many(pairs)

    async def group_size(self, group: str) -> int:
        """Members of ``group`` across every process and edge (its broker counts)."""
        self.require_valid_group_name(group)
        return await self._core().group_size(group)

    async def group_channels(self, group: str) -> list[str]:
        self.require_valid_group_name(group)
        return await self._core().group_channels(group)

    async def group_presence(self, group: str) -> list[Present]:
        """Who is present in ``group`` (it must match CONFIG ``presence_groups``)."""
        self.require_valid_group_name(group)
        return await self._core().group_presence(group)

    def set_presence_info(self, channel: str, info: dict[str, Any] | None) -> None:
        """The info dict ``channel`` (of this process and loop) joins presence groups
        with; call it inside the loop that made the channel."""
        self._core().set_presence_info(channel, info)


def _close_with_loop(layer: GRPCChannelLayer, loop: asyncio.AbstractEventLoop) -> None:
    """Close ``layer``'s core of ``loop`` when the loop closes (as channels_redis does for
    its connection pools): ``asyncio.run`` and ``async_to_sync`` close theirs."""
    original = loop.close

    def close(self: asyncio.AbstractEventLoop) -> None:
        try:
            core = layer._take_core(loop)
            if core is not None and not self.is_running():
                self.run_until_complete(core.close())
        finally:
            self.close = original  # type: ignore[method-assign]
            original()

    # A loop class without attributes keeps its close: the core goes with its tasks.
    with contextlib.suppress(AttributeError):
        loop.close = types.MethodType(close, loop)  # type: ignore[method-assign]
