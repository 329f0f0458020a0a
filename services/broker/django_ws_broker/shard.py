"""The broker's shard state, with no gRPC and no sockets in sight.

Which edge streams subscribe to which group, and what to deliver to whom. The gRPC
servicer is a thin adapter that feeds frames in and writes queues out. Keeping this
plain is what lets every rule (ownership, limits, fan-out once per edge, bounded
queues) be tested directly.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from django_ws_broker.history import History
from django_ws_broker.membership import (
    DEFAULT_MAX_GROUP_MEMBERS,
    DEFAULT_PRESENCE_GRACE_SECONDS,
    Membership,
)
from django_ws_proto.names import MAX_NAME_LENGTH, channel_name_error, group_name_error
from django_ws_proto.ring import ShardRing
from django_ws_proto.v1 import broker_pb2

DEFAULT_QUEUE_SIZE = 10_000
"""Deliveries waiting for one edge stream before further ones are dropped and counted."""

DEFAULT_QUEUE_BYTES = 32 * 1024 * 1024
"""Bytes of deliveries waiting for one edge stream before further ones are dropped and
counted: the count bound alone would let large events pile up to gigabytes."""

DEFAULT_MAX_DELIVERY_BYTES = 8 * 1024 * 1024
"""Largest delivery the broker forwards: half the default gRPC message limit, so that a
frame carrying it (with its envelope and a control answer) always fits in a message."""

DEFAULT_MAX_GROUPS_PER_EDGE = 100_000
"""Groups one edge stream may subscribe to; past it subscriptions are refused."""

# Room kept above the delivery bounds for control frames (refusals, sync barriers), so
# an edge that is slow to read still gets the answers it asked for, yet memory stays
# bounded when a client floods refusable operations without reading.
_CONTROL_HEADROOM = 1_000
_CONTROL_HEADROOM_BYTES = 1024 * 1024

PUBLISHER_MEMORY_SECONDS = 600.0
"""How long the publish seqs of an edge whose stream ended are remembered: longer than
any reconnect (a rolling upgrade of a broker) takes."""

UNARY_DEDUP_WINDOW = 100_000
"""Recent (publisher, seq) pairs of unary publishes remembered to drop retries."""

_EDGE_ID_RE = re.compile(r"[A-Za-z0-9\-_.]+")

EDGE_ID_RULE = (
    f"an edge id must be 1 to {MAX_NAME_LENGTH} characters of ASCII letters, digits, "
    "hyphens, underscores or periods (it is what its channel names start with, before '!')"
)

REPLACED = "this stream was replaced by a newer Attach stream with the same edge id"

QueueItem = broker_pb2.Delivery | broker_pb2.BrokerFrame


def edge_id_error(edge_id: str) -> str | None:
    """Why ``edge_id`` cannot name an edge stream, or None when it can."""
    if not 0 < len(edge_id) <= MAX_NAME_LENGTH or not _EDGE_ID_RE.fullmatch(edge_id):
        return f"{EDGE_ID_RULE}; got {edge_id[:120]!r}"
    return None


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(eq=False)
class EdgeStream:
    """One attached edge worker: its subscriptions and its bounded outbound queue."""

    edge_id: str
    queue_size: int
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    queue: asyncio.Queue[QueueItem] = field(init=False)
    groups: set[str] = field(default_factory=set)
    queued_bytes: int = 0
    dropped_unreported: int = 0
    dropped_total: int = 0
    delivered_total: int = 0
    closed: bool = False
    # The highest publish seq of this edge applied so far, told back in every frame.
    acked: int = 0
    # When the oldest item still queued arrived, near enough (monotonic): set when an
    # item finds the queue empty, for the writer's linger (django_ws_proto.batching).
    first_queued: float = 0.0
    _sizes: deque[int] = field(init=False, default_factory=deque)
    # While the writer lingers: the bounds at which it stops, and the future it waits on.
    _gathering: asyncio.Future[None] | None = field(init=False, default=None)
    _enough_items: int = field(init=False, default=0)
    _enough_bytes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_size + _CONTROL_HEADROOM)

    def _put(self, item: QueueItem, size: int) -> None:
        if not self._sizes:
            self.first_queued = time.monotonic()
        self.queue.put_nowait(item)
        self._sizes.append(size)
        self.queued_bytes += size
        if self._gathering is not None and self._gathered_enough():
            _finish(self._gathering)

    def _gathered_enough(self) -> bool:
        return len(self._sizes) >= self._enough_items or self.queued_bytes >= self._enough_bytes

    async def gather(self, seconds: float, frame_items: int, frame_bytes: int) -> None:
        """Let more queue for up to ``seconds`` (the writer's linger), ending as soon as
        a frame's worth (``frame_items`` or ``frame_bytes``) or half the queue's bound
        waits: a longer wait would not make the frame bigger, and would let a burst fill
        the queue to where deliveries are dropped."""
        self._enough_items = min(frame_items, max(1, self.queue_size // 2))
        self._enough_bytes = min(frame_bytes, max(1, self.queue_bytes // 2))
        if self._gathered_enough():
            return
        loop = asyncio.get_running_loop()
        gathering: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _finish, gathering)
        self._gathering = gathering
        try:
            await gathering
        finally:
            timer.cancel()
            self._gathering = None

    def offer(self, delivery: broker_pb2.Delivery, size: int = 0) -> bool:
        """Queue a delivery of ``size`` bytes unless the edge is too far behind (by
        count or by bytes); False when dropped. One delivery larger than the byte bound
        still goes through when nothing else is waiting, so no event is undeliverable."""
        if self.queue.qsize() >= self.queue_size or (
            self.queued_bytes and self.queued_bytes + size > self.queue_bytes
        ):
            self.dropped_unreported += 1
            self.dropped_total += 1
            return False
        self._put(delivery, size)
        self.delivered_total += 1
        return True

    def offer_control(self, frame: broker_pb2.BrokerFrame) -> bool:
        """Queue a control frame in order with deliveries; False when even the headroom
        (in count or bytes) is full."""
        size = frame.ByteSize()
        if self.queue.full() or (
            self.queued_bytes + size > self.queue_bytes + _CONTROL_HEADROOM_BYTES
        ):
            self.dropped_total += 1
            return False
        self._put(frame, size)
        return True

    def _taken(self, item: QueueItem) -> tuple[QueueItem, int]:
        size = self._sizes.popleft()
        self.queued_bytes -= size
        return item, size

    async def take(self) -> tuple[QueueItem, int]:
        """The next queued item and its size in bytes, waiting for one."""
        return self._taken(await self.queue.get())

    def take_nowait(self) -> tuple[QueueItem, int]:
        """The next queued item and its size; raises ``asyncio.QueueEmpty`` when empty."""
        return self._taken(self.queue.get_nowait())

    def next_size(self) -> int:
        """Size in bytes of the next queued item (0 when the queue is empty)."""
        return self._sizes[0] if self._sizes else 0

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
    dropped_control: int = 0
    refused: int = 0
    streams_attached: int = 0
    duplicates: int = 0
    resumed: int = 0
    resume_lost: int = 0
    publish_requests: int = 0


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
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_delivery_bytes: int = DEFAULT_MAX_DELIVERY_BYTES,
        max_groups_per_edge: int = DEFAULT_MAX_GROUPS_PER_EDGE,
        topology_epoch: int = 0,
        history: History | None = None,
        max_group_members: int = DEFAULT_MAX_GROUP_MEMBERS,
        presence_grace: float = DEFAULT_PRESENCE_GRACE_SECONDS,
    ) -> None:
        if not 0 <= ordinal < shards:
            raise ValueError(f"ordinal {ordinal} is outside 0..{shards - 1} for {shards} shards")
        self.ordinal = ordinal
        self.ring = ShardRing(shards)
        self.topology_epoch = topology_epoch
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.max_delivery_bytes = max_delivery_bytes
        self.max_groups_per_edge = max_groups_per_edge
        self.edges: dict[str, EdgeStream] = {}
        # Insertion-ordered dicts used as ordered sets: fan-out order is stable.
        self.groups: dict[str, dict[EdgeStream, None]] = {}
        self.counters = ShardCounters()
        self.history = history if history is not None else History()
        # Edge id -> highest publish seq applied from its streams: a publish re-sent
        # after a reconnect is applied once. Kept across streams (and saved on a
        # graceful stop), pruned some time after the edge's last stream ended.
        self.publishers: dict[str, int] = {}
        self._publisher_gone: dict[str, float] = {}
        # Unary publishers (plain Django processes) may retry concurrently sent
        # requests in any order: a window of the seqs seen recently, per publisher.
        self._unary_seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        # Who is in each owned group, as edges report it (counts, lists, presence);
        # presence events go out as group messages, numbered in the group's order.
        self.membership = Membership(
            self._emit, max_group_members=max_group_members, grace=presence_grace
        )

    @property
    def shards(self) -> int:
        return self.ring.shards

    def shard_count_error(self, shards: int, topology_epoch: int) -> str | None:
        """Why a caller stating ``shards`` (from ``topology_epoch``) must be refused,
        or None.

        Two views of the same topology epoch with different counts mean one side is
        misconfigured: it would route groups to brokers that do not own them. A caller
        with a newer epoch saw a reshard this broker has not had yet (brokers are
        resharded one by one), and one with an older epoch learns the newer count from
        this broker's Welcome; neither is refused (ownership is still checked per group).
        """
        if not shards or shards == self.shards or topology_epoch != self.topology_epoch:
            return None
        return (
            f"shard count mismatch: this is broker {self.ordinal} of {self.shards} (topology "
            f"epoch {self.topology_epoch}), the caller counts {shards} brokers at the same "
            "epoch: give edges and Django processes the same shard count as the brokers' "
            "--shards ('shards' in the transport CONFIG, or DJANGO_WS_SHARDS)"
        )

    # Streams -------------------------------------------------------------------------

    def attach(self, edge_id: str) -> EdgeStream:
        """Register a new stream. A second stream with the same id replaces the first:
        it is the same edge reconnecting before the broker noticed the old one die."""
        previous = self.edges.get(edge_id)
        if previous is not None:
            self.detach(previous)
        edge = EdgeStream(edge_id=edge_id, queue_size=self.queue_size, queue_bytes=self.queue_bytes)
        edge.acked = self.publishers.get(edge_id, 0)
        self._publisher_gone.pop(edge_id, None)
        self.edges[edge_id] = edge
        self.counters.streams_attached += 1
        return edge

    def detach(self, edge: EdgeStream) -> None:
        """Forget a stream and every subscription it held (its edge died or left)."""
        if edge.closed:
            return
        edge.closed = True
        self.membership.drop_edge(edge.edge_id)
        for group in edge.groups:
            self._drop_subscriber(group, edge)
        edge.groups.clear()
        if self.edges.get(edge.edge_id) is edge:
            del self.edges[edge.edge_id]
            if edge.edge_id in self.publishers:
                self._publisher_gone[edge.edge_id] = time.monotonic()

    def prune(self, now: float | None = None) -> None:
        """Periodic upkeep: expire history, forget quiet groups nobody subscribes to,
        and forget the publish seqs of edges gone for longer than any reconnect takes."""
        now = time.monotonic() if now is None else now
        self.history.trim_expired()
        for group in [g for g, log in self.history.logs.items() if not log.entries]:
            if group not in self.groups:
                self.history.forget(group)
        for edge_id, gone in list(self._publisher_gone.items()):
            if now - gone > PUBLISHER_MEMORY_SECONDS:
                del self._publisher_gone[edge_id]
                self.publishers.pop(edge_id, None)

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
        # A detached stream (replaced, or ending) must not plant subscriptions that
        # nothing would ever remove.
        reason = REPLACED if edge.closed else self.check_group(group)
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

    def resume(self, edge: EdgeStream, resume: broker_pb2.Resume) -> broker_pb2.Recovered:
        """Subscribe ``edge`` to the group and replay what it missed after the
        resume's position: the answer goes on the edge's queue, in order with the
        deliveries, so live ones that follow it continue where the replay ends."""
        group = resume.group
        # A refused name is echoed cut short, as refusals are.
        answer = broker_pb2.Recovered(request=resume.request, group=group[:120])
        reason = self.subscribe(edge, group)
        if reason is not None:
            answer.refused = reason
            return answer
        replay = self.history.replay(group, resume.epoch, resume.offset)
        answer.epoch, answer.offset, answer.lost = replay.epoch, replay.offset, replay.lost
        answer.deliveries.extend(replay.deliveries)
        if resume.epoch:
            self.counters.resumed += 1
            if replay.lost:
                self.counters.resume_lost += 1
        return answer

    def member(self, edge: EdgeStream, member: broker_pb2.Member) -> tuple[str | None, bool]:
        """Apply a member change an edge reported: the refusal reason, if any, and
        whether it refuses the member itself (a limit: the edge takes it back) rather
        than the group here (not the owner: the edge moves it when it learns the
        shard count)."""
        reason = REPLACED if edge.closed else self.check_group(member.group)
        if reason is None and not member.left and member.group not in edge.groups:
            # Bounds what one edge can make the broker keep: its groups (at most
            # --max-groups-per-edge) times --max-group-members.
            reason = (
                f"not subscribed: an edge reports members only of groups it subscribes to "
                f"({member.group[:120]!r})"
            )
        if reason is not None:
            self.counters.refused += 1
            return reason, False
        reason = self.membership.apply(edge.edge_id, member)
        if reason is not None:
            self.counters.refused += 1
        return reason, reason is not None

    def _emit(self, group: str, event: broker_pb2.Event) -> None:
        self.publish(broker_pb2.Publish(group=group, event=event, sent_at=time.time()))

    def accept_seq(self, publisher: str, seq: int, *, stream: bool) -> bool:
        """Whether a publish numbered ``seq`` by ``publisher`` is new (to be applied);
        False for one already applied, which is counted and skipped."""
        if stream:
            if seq <= self.publishers.get(publisher, 0):
                self.counters.duplicates += 1
                return False
            self.publishers[publisher] = seq
            return True
        key = (publisher, seq)
        if key in self._unary_seen:
            self.counters.duplicates += 1
            return False
        self._unary_seen[key] = None
        if len(self._unary_seen) > UNARY_DEDUP_WINDOW:
            self._unary_seen.popitem(last=False)
        return True

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
        # A Delivery has the same fields as its Publish, hence the same size.
        size = publish.ByteSize()
        reason = (
            self._size_error(size)
            or (channel_name_error(publish.channel) if publish.channel else None)
            or (None if publish.channel else self.check_group(publish.group))
        )
        if reason is not None:
            self.counters.refused += 1
            return reason
        self.counters.published += 1
        if publish.channel:
            self._send_to_channel(publish, size)
            return None
        # One Delivery is shared by every subscriber's queue (each counts its size) and
        # by the group's history, which numbers it.
        delivery = broker_pb2.Delivery(
            group=publish.group, event=publish.event, sent_at=publish.sent_at
        )
        # Copied only when present: passing an empty map or list to the constructor
        # costs more than the rest of it (about 1.5 us of 2.5 per publish).
        if publish.trace:
            delivery.trace.update(publish.trace)
        if publish.exclude:
            delivery.exclude.extend(publish.exclude)
        self.history.append(publish.group, delivery, size)
        subscribers = self.groups.get(publish.group)
        if not subscribers:
            return None
        counters = self.counters
        for edge in subscribers:
            if edge.offer(delivery, size):
                counters.delivered += 1
            else:
                counters.dropped_queue_full += 1
        return None

    def _send_to_channel(self, publish: broker_pb2.Publish, size: int) -> None:
        channel = publish.channel
        home, bang, _ = channel.partition("!")
        edge = self.edges.get(home) if bang else None
        if edge is None:
            # As in Channels, a send to a channel nobody holds is not an error for the
            # sender (the connection may just have closed); it is counted as a drop.
            self.counters.dropped_no_channel += 1
            return
        delivery = broker_pb2.Delivery(
            channel=channel, event=publish.event, trace=publish.trace, sent_at=publish.sent_at
        )
        if edge.offer(delivery, size):
            self.counters.delivered += 1
        else:
            self.counters.dropped_queue_full += 1

    def _size_error(self, size: int) -> str | None:
        if size <= self.max_delivery_bytes:
            return None
        return (
            f"event too large: the publish is {size} bytes, over the {self.max_delivery_bytes} "
            "bytes this broker forwards (half its --max-message-bytes)"
        )

    def offer_control(self, edge: EdgeStream, frame: broker_pb2.BrokerFrame) -> bool:
        """Queue a control frame for an edge stream; a frame that does not fit is counted."""
        if edge.offer_control(frame):
            return True
        self.counters.dropped_control += 1
        return False

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
        for group in [g for g in self.history.logs if self.ring.owner(g) != self.ordinal]:
            self.history.forget(group)
        self.membership.release(lambda group: self.ring.owner(group) == self.ordinal)
        return len(released)

    # Saving and loading --------------------------------------------------------------

    def to_state(self) -> broker_pb2.BrokerState:
        """What a graceful stop saves: every group's position and history, and the
        publish seqs applied, so that the next start continues them."""
        state = broker_pb2.BrokerState(
            ordinal=self.ordinal, shards=self.shards, topology_epoch=self.topology_epoch
        )
        self.history.to_state(state)
        state.publishers.update(self.publishers)
        return state

    def load_state(self, state: broker_pb2.BrokerState) -> int:
        """Continue from a saved state (groups this broker no longer owns are left
        out); returns how many groups' histories were loaded."""
        if state.ordinal != self.ordinal:
            raise ValueError(
                f"the saved state is broker {state.ordinal}'s, this is broker {self.ordinal}"
            )
        self.topology_epoch = max(self.topology_epoch, state.topology_epoch)
        now = time.monotonic()
        for edge_id, seq in state.publishers.items():
            self.publishers[edge_id] = seq
            self._publisher_gone[edge_id] = now
        owned = [g for g in state.groups if self.ring.owner(g.group) == self.ordinal]
        return self.history.load_state(owned)

    # Introspection -------------------------------------------------------------------

    def subscription_count(self) -> int:
        return sum(len(subscribers) for subscribers in self.groups.values())
