"""The broker's shard state, with no gRPC and no sockets in sight.

Which edge streams subscribe to which group, and what to deliver to whom. The gRPC
servicer is a thin adapter that feeds frames in and writes queues out. Keeping this
plain is what lets every rule (ownership, limits, fan-out once per edge, bounded
queues) be tested directly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from django_ws_proto.names import channel_name_error, group_name_error
from django_ws_proto.ring import ShardRing
from django_ws_proto.v1 import broker_pb2

DEFAULT_QUEUE_SIZE = 10_000
"""Deliveries waiting for one edge stream before further ones are dropped and counted."""

DEFAULT_MAX_GROUPS_PER_EDGE = 100_000
"""Groups one edge stream may subscribe to; past it subscriptions are refused."""

# Room kept above the delivery bound for control frames (refusals, sync barriers), so
# an edge that is slow to read still gets the answers it asked for, yet memory stays
# bounded when a client floods refusable operations without reading.
_CONTROL_HEADROOM = 1_000

QueueItem = broker_pb2.Delivery | broker_pb2.BrokerFrame


@dataclass(eq=False)
class EdgeStream:
    """One attached edge worker: its subscriptions and its bounded outbound queue."""

    edge_id: str
    queue_size: int
    queue: asyncio.Queue[QueueItem] = field(init=False)
    groups: set[str] = field(default_factory=set)
    dropped_unreported: int = 0
    dropped_total: int = 0
    delivered_total: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_size + _CONTROL_HEADROOM)

    def offer(self, delivery: broker_pb2.Delivery) -> bool:
        """Queue a delivery unless the edge is too far behind; False when dropped."""
        if self.queue.qsize() >= self.queue_size:
            self.dropped_unreported += 1
            self.dropped_total += 1
            return False
        self.queue.put_nowait(delivery)
        self.delivered_total += 1
        return True

    def offer_control(self, frame: broker_pb2.BrokerFrame) -> bool:
        """Queue a control frame in order with deliveries; False when even the headroom is full."""
        if self.queue.full():
            self.dropped_total += 1
            return False
        self.queue.put_nowait(frame)
        return True

    def take_dropped(self) -> int:
        """How many deliveries were dropped since the last call (reported to the edge)."""
        dropped, self.dropped_unreported = self.dropped_unreported, 0
        return dropped


@dataclass
class ShardCounters:
    """Running totals, read by the metrics collector at scrape time (no hot-path cost)."""

    published: int = 0
    delivered: int = 0
    dropped_queue_full: int = 0
    dropped_no_channel: int = 0
    refused: int = 0
    streams_attached: int = 0


class NotOwner(Exception):
    """An operation for a group this broker does not own under the current shard count."""


class ShardState:
    """Group -> subscribed edge streams for the groups this broker owns."""

    def __init__(
        self,
        *,
        ordinal: int = 0,
        shards: int = 1,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_groups_per_edge: int = DEFAULT_MAX_GROUPS_PER_EDGE,
        topology_epoch: int = 0,
    ) -> None:
        if not 0 <= ordinal < shards:
            raise ValueError(f"ordinal {ordinal} is outside 0..{shards - 1} for {shards} shards")
        self.ordinal = ordinal
        self.ring = ShardRing(shards)
        self.topology_epoch = topology_epoch
        self.queue_size = queue_size
        self.max_groups_per_edge = max_groups_per_edge
        self.edges: dict[str, EdgeStream] = {}
        # Insertion-ordered dicts used as ordered sets: fan-out order is stable.
        self.groups: dict[str, dict[EdgeStream, None]] = {}
        self.counters = ShardCounters()

    @property
    def shards(self) -> int:
        return self.ring.shards

    # Streams -------------------------------------------------------------------------

    def attach(self, edge_id: str) -> EdgeStream:
        """Register a new stream. A second stream with the same id replaces the first:
        it is the same edge reconnecting before the broker noticed the old one die."""
        previous = self.edges.get(edge_id)
        if previous is not None:
            self.detach(previous)
        edge = EdgeStream(edge_id=edge_id, queue_size=self.queue_size)
        self.edges[edge_id] = edge
        self.counters.streams_attached += 1
        return edge

    def detach(self, edge: EdgeStream) -> None:
        """Forget a stream and every subscription it held (its edge died or left)."""
        if edge.closed:
            return
        edge.closed = True
        for group in edge.groups:
            self._drop_subscriber(group, edge)
        edge.groups.clear()
        if self.edges.get(edge.edge_id) is edge:
            del self.edges[edge.edge_id]

    # Group operations ----------------------------------------------------------------

    def check_group(self, group: str) -> str | None:
        """Why an operation on ``group`` is refused here, or None when it is accepted."""
        error = group_name_error(group)
        if error:
            return error
        owner = self.ring.owner(group)
        if owner != self.ordinal:
            return (
                f"not the owner: group {group!r} belongs to broker {owner} of "
                f"{self.shards}, this is broker {self.ordinal}"
            )
        return None

    def subscribe(self, edge: EdgeStream, group: str) -> str | None:
        """Subscribe an edge stream to a group; returns the refusal reason, if any."""
        reason = self.check_group(group)
        if reason is None and group not in edge.groups:
            if len(edge.groups) >= self.max_groups_per_edge:
                reason = (
                    f"subscription limit reached: an edge stream may hold at most "
                    f"{self.max_groups_per_edge} groups"
                )
            else:
                edge.groups.add(group)
                self.groups.setdefault(group, {})[edge] = None
        if reason is not None:
            self.counters.refused += 1
        return reason

    def unsubscribe(self, edge: EdgeStream, group: str) -> None:
        """Unsubscribe an edge stream from a group (a no-op when it was not subscribed)."""
        if group in edge.groups:
            edge.groups.discard(group)
            self._drop_subscriber(group, edge)

    def _drop_subscriber(self, group: str, edge: EdgeStream) -> None:
        subscribers = self.groups.get(group)
        if subscribers is not None:
            subscribers.pop(edge, None)
            if not subscribers:
                del self.groups[group]

    def publish(self, publish: broker_pb2.Publish) -> str | None:
        """Fan a publish out: once per subscribed edge stream, never once per member.

        Returns the refusal reason, if any. Deliveries to an edge whose queue is full
        are dropped and counted, so one stalled edge never holds up the others.
        """
        if publish.channel:
            return self._send_to_channel(publish)
        reason = self.check_group(publish.group)
        if reason is not None:
            self.counters.refused += 1
            return reason
        self.counters.published += 1
        subscribers = self.groups.get(publish.group)
        if not subscribers:
            return None
        delivery = broker_pb2.Delivery(
            group=publish.group,
            event=publish.event,
            trace=publish.trace,
            sent_at=publish.sent_at,
        )
        counters = self.counters
        for edge in subscribers:
            if edge.offer(delivery):
                counters.delivered += 1
            else:
                counters.dropped_queue_full += 1
        return None

    def _send_to_channel(self, publish: broker_pb2.Publish) -> str | None:
        channel = publish.channel
        error = channel_name_error(channel)
        if error:
            self.counters.refused += 1
            return error
        home, bang, _ = channel.partition("!")
        edge = self.edges.get(home) if bang else None
        self.counters.published += 1
        if edge is None:
            # As in Channels, a send to a channel nobody holds is not an error for the
            # sender (the connection may just have closed); it is counted as a drop.
            self.counters.dropped_no_channel += 1
            return None
        delivery = broker_pb2.Delivery(
            channel=channel, event=publish.event, trace=publish.trace, sent_at=publish.sent_at
        )
        if edge.offer(delivery):
            self.counters.delivered += 1
        else:
            self.counters.dropped_queue_full += 1
        return None

    # Topology ------------------------------------------------------------------------

    def reshard(self, shards: int, topology_epoch: int = 0) -> int:
        """Adopt a new shard count; drop subscriptions of groups no longer owned here.

        Returns how many groups were released. Edges move those subscriptions to the
        new owners themselves, because membership lives at the edge. A broker whose
        ordinal is past the new count is leaving the cluster: it releases every group
        and refuses everything from then on, until it is stopped.
        """
        if shards < 1:
            raise ValueError(f"the shard count must be at least 1, got {shards}")
        self.ring = ShardRing(shards)
        self.topology_epoch = max(self.topology_epoch, topology_epoch)
        released = [group for group in self.groups if self.ring.owner(group) != self.ordinal]
        for group in released:
            for edge in self.groups.pop(group):
                edge.groups.discard(group)
        return len(released)

    # Introspection -------------------------------------------------------------------

    def subscription_count(self) -> int:
        return sum(len(subscribers) for subscribers in self.groups.values())
