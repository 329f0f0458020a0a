"""The channel layer inside an edge worker.

Group membership of this worker's connections is kept in a :class:`GroupIndex`; the
broker that owns a group hears about it only when the group's first local member joins
and its last one leaves. A group message arrives from the broker once per worker and is
decoded once, then handed to each local member.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from django_ws_client.connection import CloseCode
from django_ws_client.exceptions import BrokerUnavailable, ChannelFull
from django_ws_client.tracing import inject_trace, span, tracer, tracing_enabled
from django_ws_client.transport.base import ChannelLayer, channel_of, event_from_wire
from django_ws_client.transport.config import TransportConfig
from django_ws_edge import metrics
from django_ws_edge.group_index import GroupIndex
from django_ws_edge.links import BrokerLink, LinkHandlers
from django_ws_proto import codec
from django_ws_proto import tracing as wire_tracing
from django_ws_proto.names import channel_home, group_name_error, require_group_name
from django_ws_proto.ring import ShardRing
from django_ws_proto.v1 import broker_pb2

if TYPE_CHECKING:
    from django_ws_edge.connection import EdgeConnection

logger = logging.getLogger("django_ws.edge")


class EdgeChannelLayer(ChannelLayer):
    """Local membership plus one :class:`BrokerLink` per broker."""

    def __init__(self, config: TransportConfig, *, edge_id: str | None = None) -> None:
        super().__init__(config)
        self.edge_id = edge_id or f"ws.{secrets.token_hex(6)}"
        self.index = GroupIndex()
        self.connections: dict[str, EdgeConnection] = {}
        self.ring = ShardRing(config.shards)
        self.topology_epoch = 0
        self._channel_counter = 0
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._welcomed: dict[int, str] = {}
        self.tally = metrics.Tally()  # ordinal -> boot id of its current stream
        self.links: list[BrokerLink] = []
        self._handlers = LinkHandlers(
            groups_owned=self._groups_owned, on_frame=self._on_frame, on_state=self._on_state
        )
        for ordinal in range(config.shards):
            self.links.append(self._make_link(ordinal))

    def _make_link(self, ordinal: int) -> BrokerLink:
        return BrokerLink(
            ordinal=ordinal,
            address=self.config.address_for(ordinal),
            shards=self.ring.shards,
            edge_id=self.edge_id,
            config=self.config,
            handlers=self._handlers,
        )

    # Life ----------------------------------------------------------------------------

    def start(self) -> None:
        for link in self.links:
            link.start()

    async def close(self) -> None:
        for link in self.links:
            await link.close()

    @property
    def ready(self) -> bool:
        """Ready only while every broker this worker needs is linked."""
        return all(link.up for link in self.links)

    # Connections ---------------------------------------------------------------------

    def new_channel_name(self) -> str:
        self._channel_counter += 1
        return f"{self.edge_id}!{self._channel_counter:x}"

    def register(self, connection: EdgeConnection) -> None:
        self.connections[connection.channel_name] = connection

    def unregister(self, channel: str) -> None:
        """Forget a finished connection and take it out of all its groups."""
        self.connections.pop(channel, None)
        for group in self.index.remove_channel(channel):
            self._link_for(group).unsubscribe(group)
        metrics.LOCAL_GROUPS.set(len(self.index))

    def _is_local(self, channel: str) -> bool:
        return channel_home(channel) == self.edge_id

    def _link_for(self, group: str) -> BrokerLink:
        return self.links[self.ring.owner(group)]

    def _groups_owned(self, ordinal: int) -> list[str]:
        return [group for group in self.index.groups() if self.ring.owner(group) == ordinal]

    # Channel layer API ---------------------------------------------------------------

    async def group_add(self, group: str, channel: Any) -> None:
        require_group_name(group)
        name = channel_of(channel)
        if not self._is_local(name):
            await self._control("group_add", group, name)
            return
        if name not in self.connections and name not in self._queues:
            return  # the connection already finished: joining would leak membership
        if self.index.add(group, name):
            metrics.LOCAL_GROUPS.set(len(self.index))
            applied = self._link_for(group).subscribe(group)
            if applied is not None:
                self._subscribing[group] = applied
                applied.add_done_callback(functools.partial(self._subscribed, group))
        # As with Channels, once group_add returns the channel receives the group's
        # messages: wait until the broker has the subscription (once per worker).
        applied = self._subscribing.get(group)
        if applied is not None:
            # If the link is down or slow, the reconnect re-subscribes the group.
            with contextlib.suppress(TimeoutError, BrokerUnavailable):
                await asyncio.wait_for(asyncio.shield(applied), self.config.timeout)

    def _subscribed(self, group: str, applied: asyncio.Future[None]) -> None:
        if self._subscribing.get(group) is applied:
            del self._subscribing[group]

    async def group_discard(self, group: str, channel: Any) -> None:
        require_group_name(group)
        name = channel_of(channel)
        if not self._is_local(name):
            await self._control("group_discard", group, name)
            return
        if self.index.discard(group, name):
            self._link_for(group).unsubscribe(group)
            metrics.LOCAL_GROUPS.set(len(self.index))

    async def group_send(self, group: str, message: Any) -> None:
        require_group_name(group)
        publish = broker_pb2.Publish(
            group=group, event=self.encode_event(message), sent_at=time.time()
        )
        self.tally.group_sends += 1
        with span("django_ws group_send", SpanKind.PRODUCER, group=group):
            inject_trace(publish.trace)
            await self._link_for(group).publish(publish)

    async def send(self, channel: str, message: Any) -> None:
        name = channel_of(channel)
        event = self.encode_event(message)
        if self._is_local(name):
            # Same worker: the sender can be told at once, as Channels does.
            decoded = event_from_wire(codec.decode(event))
            if not self._deliver_to(name, decoded, close_if_full=False):
                raise ChannelFull(f"channel {name!r} is over its capacity of {self.capacity}")
            return
        publish = broker_pb2.Publish(channel=name, event=event, sent_at=time.time())
        inject_trace(publish.trace)
        await self.links[self.ring.channel_owner(name)].publish(publish)

    async def _control(self, op: str, group: str, channel: str) -> None:
        publish = broker_pb2.Publish(channel=channel, event=codec.encode_control(op, group))
        await self.links[self.ring.channel_owner(channel)].publish(publish)

    async def flush(self) -> None:
        for link in self.links:
            if link.up:
                await link.sync()

    # From the brokers ----------------------------------------------------------------

    def _on_state(self, ordinal: int, up: bool) -> None:
        metrics.LINKS_UP.set(sum(1 for link in self.links if link.up))

    def _on_frame(self, ordinal: int, frame: broker_pb2.BrokerFrame) -> None:
        if frame.HasField("welcome"):
            self._on_welcome(ordinal, frame.welcome)
        if frame.dropped:
            metrics.BROKER_DROPPED.inc(frame.dropped)
            logger.warning(
                "broker %d dropped %d deliveries for this worker (queue full)",
                ordinal,
                frame.dropped,
            )
        for refusal in frame.refusals:
            logger.error(
                "broker %d refused an operation on %r: %s",
                ordinal,
                refusal.group or refusal.channel,
                refusal.reason,
            )
        if frame.deliveries:
            now = time.time()
            for delivery in frame.deliveries:
                if delivery.sent_at:
                    self.tally.observe_latency(max(0.0, now - delivery.sent_at))
                self._on_delivery(delivery)

    # Topology ------------------------------------------------------------------------

    def _on_welcome(self, ordinal: int, welcome: broker_pb2.Welcome) -> None:
        """Adopt a shard count announced with a higher topology epoch than ours.

        Brokers are resharded one by one, so a subscription moved early may have been
        refused by a broker that still had the old count. Every broker announces its
        new count on the streams it already has; the edge then offers that broker all
        its groups again (subscribing is idempotent), which heals those refusals.
        """
        announcement = self._welcomed.get(ordinal) == welcome.boot_id
        self._welcomed[ordinal] = welcome.boot_id
        if welcome.topology_epoch > self.topology_epoch:
            self.topology_epoch = welcome.topology_epoch
            if welcome.shards != self.ring.shards:
                logger.info(
                    "broker %d announced %d shards (epoch %d): moving subscriptions",
                    ordinal,
                    welcome.shards,
                    welcome.topology_epoch,
                )
                self.reshard(welcome.shards)
        if announcement and ordinal < len(self.links):
            link = self.links[ordinal]
            for group in self._groups_owned(ordinal):
                link.subscribe(group)

    def reshard(self, shards: int) -> int:
        """Move to ``shards`` brokers: route every local group to its owner under the
        new count, subscribing there and unsubscribing at the old owner. Returns how
        many groups moved."""
        try:
            addresses = [self.config.address_for(k) for k in range(shards)]
        except Exception as exc:
            logger.error("cannot move to %d shards: %s", shards, exc)
            return 0
        old_ring, new_ring = self.ring, ShardRing(shards)
        for ordinal in range(len(self.links), shards):
            self.links.append(self._make_link(ordinal))
        self.ring = new_ring
        moved = 0
        for group in self.index.groups():
            old, new = old_ring.owner(group), new_ring.owner(group)
            if old != new:
                moved += 1
                if old < len(self.links):
                    self.links[old].unsubscribe(group)
                self.links[new].subscribe(group)
        for link in self.links:
            link.shards = shards
        leaving, self.links = self.links[shards:], self.links[:shards]
        for link in self.links:
            if not link.started:
                link.start()
        for link in leaving:
            asyncio.get_running_loop().create_task(link.close())
        logger.info("now %d shards at %s; %d groups moved", shards, addresses, moved)
        return moved

    def _on_delivery(self, delivery: broker_pb2.Delivery) -> None:
        try:
            decoded = codec.decode(delivery.event)
        except ValueError as exc:
            metrics.UNDECODABLE_EVENTS.inc()
            logger.error(
                "undecodable event for %r dropped: %s", delivery.group or delivery.channel, exc
            )
            return
        if delivery.trace and tracing_enabled():
            # One span per receiving worker, in the sender's trace.
            tracer().start_span(
                "django_ws deliver",
                context=wire_tracing.extract(delivery.trace),
                kind=SpanKind.CONSUMER,
                attributes=wire_tracing.span_attributes(
                    group=delivery.group or None,
                    channel=delivery.channel or None,
                    members=len(tuple(self.index.members(delivery.group))) if delivery.group else 1,
                    edge=self.edge_id,
                ),
            ).end()
        if delivery.group:
            members = self.index.members(delivery.group)
            if not members:
                return
            event = event_from_wire(decoded)
            copy = isinstance(event, dict)
            for channel in members:
                # Each consumer gets its own dict, as with Channels' per-channel queues.
                self._deliver_to(channel, dict(event) if copy else event)
        elif decoded.kind == codec.CONTROL:
            self._apply_control(delivery.channel, decoded)
        else:
            self._deliver_to(delivery.channel, event_from_wire(decoded))

    def _apply_control(self, channel: str, decoded: codec.DecodedEvent) -> None:
        group = decoded.body.get("group", "")
        if channel not in self.connections and channel not in self._queues:
            return
        error = group_name_error(group)
        if error is not None or decoded.type not in ("group_add", "group_discard"):
            # Never let a bad name into the index: every later hello would carry it.
            metrics.UNDECODABLE_EVENTS.inc()
            logger.error("control event %r for %s dropped: %s", decoded.type, channel, error)
            return
        if decoded.type == "group_add":
            if self.index.add(group, channel):
                self._link_for(group).subscribe(group)  # nobody waits on a remote add
        elif decoded.type == "group_discard" and self.index.discard(group, channel):
            self._link_for(group).unsubscribe(group)
        metrics.LOCAL_GROUPS.set(len(self.index))

    def _deliver_to(self, channel: str, event: Any, *, close_if_full: bool = True) -> bool:
        """Hand an event to a local consumer or receive queue; False when it is full."""
        connection = self.connections.get(channel)
        if connection is None:
            queue = self._queues.get(channel)
            if queue is None:
                return True  # gone: as in Channels, not the sender's error
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                metrics.QUEUE_DROPPED.inc()
                return False
            return True
        self.tally.deliveries += 1
        if connection.deliver(event):
            return True
        if close_if_full:
            connection.close_slow(CloseCode.TRY_AGAIN_LATER)
        return False

    # Channels that are not connections ------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        """A channel of this worker that code here reads with :meth:`receive`."""
        self._channel_counter += 1
        name = f"{self.edge_id}!{prefix}.{self._channel_counter:x}"
        self._queues[name] = asyncio.Queue(maxsize=self.capacity)
        return name

    async def receive(self, channel: str) -> Any:
        queue = self._queues.get(channel)
        if queue is None:
            raise ValueError(
                f"{channel!r} was not made by new_channel() in this worker; consumers "
                "receive their events through their handlers"
            )
        return await queue.get()
