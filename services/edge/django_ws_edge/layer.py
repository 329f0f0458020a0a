"""The channel layer inside an edge worker.

Group membership of this worker's connections is kept in a :class:`GroupIndex`; the
broker that owns a group hears about it only when the group's first local member joins
and its last one leaves. A group message arrives from the broker once per worker and is
decoded once, then handed to each local member.

Every group message carries its position (epoch, offset). The worker keeps the last
position it got from each group (its *cursor*): a message it already has is skipped, a
gap (the broker dropped some for a full queue) is filled from the broker's history
before anything newer is handed on, and after a reconnect the worker asks for what it
missed. A member joining with ``since=`` gets what it missed the same way, on its own.
Where history cannot fill a gap, the members get a ``group.gap`` event and the loss is
counted.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from django_ws_client.connection import BufferBudget, Position
from django_ws_client.exceptions import BrokerUnavailable, ChannelFull, GroupRefused
from django_ws_client.positions import GAP_EVENT_TYPE, GAP_REASONS, parse_position
from django_ws_client.presence import Present, decode_present, require_presence
from django_ws_client.tracing import inject_trace, span, tracer, tracing_enabled
from django_ws_client.transport.base import (
    ChannelLayer,
    channel_of,
    event_from_wire,
    exclude_list,
    is_lifecycle_type,
)
from django_ws_client.transport.config import TransportConfig
from django_ws_edge import metrics
from django_ws_edge.group_index import GroupIndex
from django_ws_edge.links import BrokerLink, LinkHandlers
from django_ws_proto import codec
from django_ws_proto import tracing as wire_tracing
from django_ws_proto.credentials import edge_id_for, new_edge_key
from django_ws_proto.names import channel_home, group_name_error, require_group_name
from django_ws_proto.ring import ShardRing
from django_ws_proto.v1 import broker_pb2

if TYPE_CHECKING:
    from django_ws_edge.connection import EdgeConnection

logger = logging.getLogger("django_ws.edge")


class EdgeChannelLayer(ChannelLayer):
    """Local membership plus one :class:`BrokerLink` per broker."""

    def __init__(self, config: TransportConfig, *, edge_key: str | None = None) -> None:
        super().__init__(config)
        # The id is derived from a key only this worker knows: brokers refuse an Attach
        # naming this id without the key, so nobody can take over this worker's stream.
        self.edge_key = edge_key or new_edge_key()
        self.edge_id = edge_id_for(self.edge_key)
        self.index = GroupIndex()
        self.connections: dict[str, EdgeConnection] = {}
        self.ring = ShardRing(config.shards)
        self.topology_epoch = 0
        self._channel_counter = 0
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        # Group -> [epoch, offset] of the last message this worker got from it.
        self.cursors: dict[str, list[int]] = {}
        # Resume requests in flight: the worker's own (request -> group), a member's
        # (request -> group, channel), and who waits for an answer.
        self._group_requests: dict[int, str] = {}
        self._member_requests: dict[int, tuple[str, str]] = {}
        self._answer_waiters: dict[int, asyncio.Future[None]] = {}
        # Request numbers are unique across this worker's links.
        self._requests = itertools.count(1)
        # Live messages held back while a gap is filled: for the whole worker (group ->
        # deliveries) and for members catching up (group -> channel -> deliveries).
        self._held: dict[str, list[broker_pb2.Delivery]] = {}
        self._member_held: dict[str, dict[str, list[broker_pb2.Delivery]]] = {}
        self.budget: BufferBudget | None = None
        # Connections whose consumer waits for its client's socket to drain, and since when.
        self.blocked_sends: dict[EdgeConnection, float] = {}
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._welcomed: dict[int, str] = {}
        self.tally = metrics.Tally()  # ordinal -> boot id of its current stream
        self.links: list[BrokerLink] = []
        # Members that joined while their broker's link was down: the next hello
        # announces them (the others it restores silently); and members the broker
        # refused (a limit), for the group_add that waits to raise.
        self._unannounced: set[tuple[str, str]] = set()
        self._member_refusals: dict[tuple[str, str], str] = {}
        self._handlers = LinkHandlers(
            resumes_owned=self._resumes_owned,
            members_owned=self._members_owned,
            on_frame=self._on_frame,
            on_state=self._on_state,
        )
        for ordinal in range(config.shards):
            self.links.append(self._make_link(ordinal))

    def _make_link(self, ordinal: int) -> BrokerLink:
        return BrokerLink(
            ordinal=ordinal,
            address=self.config.address_for(ordinal),
            shards=self.ring.shards,
            edge_id=self.edge_id,
            edge_key=self.edge_key,
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
        """A connection's channel name: this worker's edge id (the broker routes by the
        part before ``!``), then a random part. As in Channels, the random part is what
        keeps a client that learns its own name from guessing its neighbours' where an
        app sends to a client-supplied channel name: 80 random bits (Channels has 68)."""
        return f"{self.edge_id}!{secrets.token_hex(10)}"

    def register(self, connection: EdgeConnection) -> None:
        self.connections[connection.channel_name] = connection

    def unregister(self, channel: str) -> None:
        """Forget a finished connection and take it out of all its groups."""
        self.connections.pop(channel, None)
        self.presence_infos.pop(channel, None)
        for held in self._member_held.values():
            held.pop(channel, None)
        for group in self.index.groups_of(channel):
            self._report_left(group, channel)
        for group in self.index.remove_channel(channel):
            self._unsubscribe(group)
        metrics.LOCAL_GROUPS.set(len(self.index))

    def _unsubscribe(self, group: str) -> None:
        """The group's last local member left: the worker no longer follows it."""
        self._link_for(group).unsubscribe(group)
        self.cursors.pop(group, None)
        self._held.pop(group, None)
        self._member_held.pop(group, None)

    def close_stalled_clients(self, now: float) -> None:
        """Close the clients a send has waited on for more than SLOW_CLIENT_SECONDS:
        their sockets took nothing in that time."""
        for connection, since in list(self.blocked_sends.items()):
            if now - since > connection.slow_client_seconds:
                del self.blocked_sends[connection]
                connection.close_slow(
                    f"a send made no progress for {connection.slow_client_seconds:g}s "
                    "(SLOW_CLIENT_SECONDS)"
                )

    def _is_local(self, channel: str) -> bool:
        return channel_home(channel) == self.edge_id

    def _link_for(self, group: str) -> BrokerLink:
        return self.links[self.ring.owner(group)]

    def _member(self, group: str, channel: str, *, restored: bool) -> broker_pb2.Member:
        presence, user, info = self.presence_member(group, channel)
        return broker_pb2.Member(
            group=group,
            channel=channel,
            user=user,
            info=info,
            presence=presence,
            restored=restored,
        )

    def _report_joined(self, group: str, channel: str) -> None:
        if not self._link_for(group).member(self._member(group, channel, restored=False)):
            self._unannounced.add((group, channel))

    def _report_left(self, group: str, channel: str) -> None:
        self._unannounced.discard((group, channel))
        self._link_for(group).member(broker_pb2.Member(group=group, channel=channel, left=True))

    def _members_owned(self, ordinal: int) -> list[broker_pb2.Member]:
        """Every member of the groups broker ``ordinal`` owns, for a hello: those the
        broker heard of before are restored (no presence event)."""
        members = []
        for group in self._groups_owned(ordinal):
            for channel in self.index.members(group):
                key = (group, channel)
                members.append(self._member(group, channel, restored=key not in self._unannounced))
                self._unannounced.discard(key)
        return members

    def _restore_members(self, link: BrokerLink, group: str) -> None:
        for channel in self.index.members(group):
            link.member(self._member(group, channel, restored=True))

    def _groups_owned(self, ordinal: int) -> list[str]:
        return [group for group in self.index.groups() if self.ring.owner(group) == ordinal]

    def _resumes_owned(self, ordinal: int, skip: frozenset[str]) -> list[broker_pb2.Resume]:
        """Subscriptions for a (re)connect: each group (but those in ``skip``) from the
        worker's cursor. They stand in for the worker's own requests still unanswered
        on this link, which are forgotten."""
        owned = set(self._groups_owned(ordinal))
        if not skip:
            for request, group in list(self._group_requests.items()):
                if group in owned and request not in self._member_requests:
                    del self._group_requests[request]
        resumes = []
        for group in owned - skip:
            request = next(self._requests)
            self._group_requests[request] = group
            cursor = self.cursors.get(group)
            if cursor is None:
                resumes.append(broker_pb2.Resume(group=group, request=request))
            else:
                resumes.append(
                    broker_pb2.Resume(
                        group=group, epoch=cursor[0], offset=cursor[1], request=request
                    )
                )
        return resumes

    # Channel layer API ---------------------------------------------------------------

    async def group_add(
        self,
        group: str,
        channel: Any,
        *,
        since: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        """Add a channel to a group; with ``since`` (a position this channel's client
        got from ``group_position()``), first dispatch to it what the group received
        after that position, or a ``group.gap`` event when that cannot be done.

        Raises :class:`GroupRefused` when the broker refuses the subscription (a limit):
        the channel would never receive the group's messages.
        """
        require_group_name(group)
        name = channel_of(channel)
        if not self._is_local(name):
            if since is not None:
                raise ValueError("since= works only for channels of this websocket server")
            await self._control("group_add", group, name)
            return
        if name not in self.connections and name not in self._queues:
            return  # the connection already finished: joining would leak membership
        if info is not None:
            self.set_presence_info(name, info)
        self.presence_member(group, name)  # an info dict too large is refused here
        position = None if since is None else self._position_or_gap(group, name, since)
        link = self._link_for(group)
        joined = not self.index.has(group, name)
        first = self.index.add(group, name)
        waiter: asyncio.Future[None] | None = None
        if first or position is not None:
            request = next(self._requests)
            if first:
                metrics.LOCAL_GROUPS.set(len(self.index))
                self._group_requests[request] = group
            if position is not None:
                # Live messages for this member wait until its catch-up is dispatched.
                self._member_held.setdefault(group, {})[name] = []
                self._member_requests[request] = (group, name)
            waiter = asyncio.get_running_loop().create_future()
            self._answer_waiters[request] = waiter
            if first:
                self._subscribing[group] = waiter
                waiter.add_done_callback(functools.partial(self._subscribed, group))
            epoch, offset = position or (0, 0)
            link.resume(broker_pb2.Resume(group=group, epoch=epoch, offset=offset, request=request))
        if joined:
            self._report_joined(group, name)
        # As with Channels, once group_add returns the channel receives the group's
        # messages: wait until the broker has the subscription (once per worker), and
        # has counted the member (one barrier for all the joins of a tick).
        waiter = waiter or self._subscribing.get(group)
        if waiter is None and joined and link.up:
            waiter = link.barrier()
        if waiter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self.config.timeout)
            except (TimeoutError, BrokerUnavailable):
                pass  # the link is down or slow: the request is sent again on reconnect
            except GroupRefused:
                await self.group_discard(group, name)
                raise
        refused = self._member_refusals.pop((group, name), None)
        if refused is not None:
            raise GroupRefused(f"broker {link.ordinal} refused {name} in {group!r}: {refused}")

    def _position_or_gap(self, group: str, channel: str, since: str) -> tuple[int, int] | None:
        """The position a client handed back, or None after telling its consumer that
        it cannot be used (a client's word is never trusted)."""
        try:
            return parse_position(since)
        except ValueError as exc:
            logger.warning("%s joined %r from %s", channel, group, exc)
            self._gap(group, "epoch", [channel], None)
            return None

    def _subscribed(self, group: str, applied: asyncio.Future[None]) -> None:
        if self._subscribing.get(group) is applied:
            del self._subscribing[group]
        if not applied.cancelled():
            applied.exception()  # retrieved: a refusal is raised to whoever waited

    async def group_discard(self, group: str, channel: Any) -> None:
        require_group_name(group)
        name = channel_of(channel)
        if not self._is_local(name):
            await self._control("group_discard", group, name)
            return
        held = self._member_held.get(group)
        if held is not None:
            held.pop(name, None)
        if self.index.has(group, name):
            self._report_left(group, name)
        if self.index.discard(group, name):
            self._unsubscribe(group)
            metrics.LOCAL_GROUPS.set(len(self.index))

    async def group_send(self, group: str, message: Any, *, exclude: Any = None) -> None:
        require_group_name(group)
        publish = broker_pb2.Publish(
            group=group,
            event=self.encode_event(message),
            sent_at=time.time(),
            exclude=exclude_list(exclude),
        )
        self.tally.group_sends += 1
        with span("django_ws group_send", SpanKind.PRODUCER, group=group):
            inject_trace(publish.trace)
            await self._link_for(group).publish(publish)

    async def group_send_many(self, messages: Iterable[tuple[str, Any]]) -> None:
        """Many (group, event) pairs: queued together, they leave in one frame per
        broker (a frame holds up to 4 MiB of publishes)."""
        publishes = []
        for group, message in messages:
            require_group_name(group)
            publishes.append(
                broker_pb2.Publish(
                    group=group, event=self.encode_event(message), sent_at=time.time()
                )
            )
        self.tally.group_sends += len(publishes)
        for publish in publishes:
            await self._link_for(publish.group).publish(publish)

    async def _ask_members(
        self, group: str, *, channels: bool = False, presence: bool = False
    ) -> broker_pb2.MembersReply:
        require_group_name(group)
        return await self._link_for(group).members(
            broker_pb2.MembersRequest(group=group, channels=channels, presence=presence)
        )

    async def group_size(self, group: str) -> int:
        return (await self._ask_members(group)).count

    async def group_channels(self, group: str) -> list[str]:
        return list((await self._ask_members(group, channels=True)).channels)

    async def group_presence(self, group: str) -> list[Present]:
        require_presence(self.config, group)
        reply = await self._ask_members(group, presence=True)
        return [decode_present(p.user, p.info, p.connections) for p in reply.present]

    async def send(self, channel: str, message: Any) -> None:
        name = channel_of(channel)
        event = self.encode_event(message)
        if self._is_local(name):
            # Same worker: the sender can be told at once, as Channels does.
            decoded = event_from_wire(codec.decode(event))
            if not self._deliver_to(name, decoded, len(event.body)):
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
            if refusal.member:
                self._member_refused(refusal.group, refusal.channel, refusal.reason)
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
        # Answers come after the deliveries the broker queued before them: the order in
        # which the broker applied everything.
        for recovered in frame.recovered:
            self._on_recovered(ordinal, recovered)

    def _member_refused(self, group: str, channel: str, reason: str) -> None:
        """The broker would not count a member (a limit): it is no member here either,
        and the group_add waiting for it raises."""
        self._member_refusals[(group, channel)] = reason
        if len(self._member_refusals) > 10_000:  # nobody waited for those: forget them
            self._member_refusals.clear()
        held = self._member_held.get(group)
        if held is not None:
            held.pop(channel, None)
        if self.index.discard(group, channel):
            self._unsubscribe(group)
            metrics.LOCAL_GROUPS.set(len(self.index))

    # Positions and catching up ---------------------------------------------------------

    def _on_recovered(self, ordinal: int, answer: broker_pb2.Recovered) -> None:
        if ordinal < len(self.links):
            self.links[ordinal].answered(answer.request)
        group = answer.group
        own = self._group_requests.pop(answer.request, None) is not None
        member = self._member_requests.pop(answer.request, None)
        waiter = self._answer_waiters.pop(answer.request, None)
        if answer.refused:
            logger.error("broker %d refused to subscribe to %r: %s", ordinal, group, answer.refused)
            if member is not None:
                self._member_held.get(group, {}).pop(member[1], None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(
                    GroupRefused(f"broker {ordinal} refused the group {group!r}: {answer.refused}")
                )
            return
        if own and group in self.index:
            self._catch_up(group, answer)
        if member is not None:
            self._catch_up_member(group, member[1], answer)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _catch_up(self, group: str, answer: broker_pb2.Recovered) -> None:
        """The worker's own resume was answered: hand on what it missed, then what was
        held back meanwhile, and continue from the answer's position."""
        cursor = self.cursors.get(group)
        held = self._held.pop(group, None)
        if cursor is None:
            self.cursors[group] = [answer.epoch, answer.offset]
        else:
            if answer.lost:
                # Tell the members first; what the broker's new history holds follows.
                members = [
                    c for c in self.index.members(group) if not self._is_held_member(group, c)
                ]
                self._gap(group, answer.lost, members, _before(answer))
                cursor[0], cursor[1] = answer.epoch, answer.offset - len(answer.deliveries)
            for delivery in answer.deliveries:
                self._on_group_delivery(delivery)
            cursor[0], cursor[1] = answer.epoch, max(cursor[1], answer.offset)
        for delivery in held or ():
            self._on_group_delivery(delivery)

    def _catch_up_member(self, group: str, channel: str, answer: broker_pb2.Recovered) -> None:
        held_by_member = self._member_held.get(group)
        held = held_by_member.pop(channel, None) if held_by_member is not None else None
        if held_by_member is not None and not held_by_member:
            del self._member_held[group]
        if held is None:
            return  # the member left meanwhile
        if answer.lost:
            self._gap(group, answer.lost, [channel], _before(answer))
        for delivery in answer.deliveries:
            self._deliver_one(channel, delivery)
        for delivery in held:
            if delivery.epoch == answer.epoch and delivery.offset > answer.offset:
                self._deliver_one(channel, delivery)

    def _is_held_member(self, group: str, channel: str) -> bool:
        held = self._member_held.get(group)
        return held is not None and channel in held

    def _gap(self, group: str, reason: str, channels: list[str], position: Position | None) -> None:
        """Tell members that messages of ``group`` may be missing and cannot be replayed."""
        public_reason = GAP_REASONS.get(reason, reason)
        metrics.DELIVERIES_LOST.labels(
            "broker_lost" if reason == "epoch" else "history_trimmed"
        ).inc(len(channels))
        for channel in channels:
            self._deliver_to(
                channel,
                {"type": GAP_EVENT_TYPE, "group": group, "reason": public_reason},
                0,
                position,
            )

    def _deliver_one(self, channel: str, delivery: broker_pb2.Delivery) -> None:
        if delivery.exclude and channel in delivery.exclude:
            return
        try:
            decoded = codec.decode(delivery.event)
        except ValueError:
            metrics.UNDECODABLE_EVENTS.inc()
            metrics.DELIVERIES_LOST.labels("undecodable").inc()
            return
        if is_lifecycle_type(decoded.type):
            self._drop_lifecycle(delivery, decoded.type)
            return
        self._deliver_to(
            channel,
            event_from_wire(decoded),
            len(delivery.event.body),
            (delivery.group, delivery.epoch, delivery.offset),
        )

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
                self._restore_members(link, group)

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
                # The new owner numbers the group's messages in its own epoch.
                self.cursors.pop(group, None)
                self.links[new].subscribe(group)
                self._restore_members(self.links[new], group)
        for link in self.links:
            link.shards = shards
        leaving, self.links = self.links[shards:], self.links[:shards]
        for link in self.links:
            if not link.started:
                link.start()
        for link in leaving:
            # What the leaving broker did not acknowledge goes to the groups' new owners.
            for publish in link.take_retained():
                asyncio.get_running_loop().create_task(self._republish(publish))
            asyncio.get_running_loop().create_task(link.close())
        logger.info("now %d shards at %s; %d groups moved", shards, addresses, moved)
        return moved

    async def _republish(self, publish: broker_pb2.Publish) -> None:
        try:
            if publish.group:
                await self._link_for(publish.group).publish(publish)
            else:
                await self.links[self.ring.channel_owner(publish.channel)].publish(publish)
        except BrokerUnavailable as exc:
            metrics.PUBLISH_LOST.inc()
            logger.error("a publish moved to a new owner was lost: %s", exc)

    def _on_delivery(self, delivery: broker_pb2.Delivery) -> None:
        """A live delivery from a broker: a group message passes the group's cursor."""
        if not delivery.group or not delivery.epoch:
            self._on_group_delivery(delivery)
            return
        group = delivery.group
        held = self._held.get(group) if self._held else None
        if held is not None:
            held.append(delivery)  # a gap is being filled: this comes after it
            return
        cursor = self.cursors.get(group)
        if cursor is not None and delivery.epoch == cursor[0]:
            if delivery.offset <= cursor[1]:
                return  # had it already (a catch-up overlapped the live stream)
            if delivery.offset != cursor[1] + 1:
                self._fill_gap(group, cursor, delivery)
                return
        self._on_group_delivery(delivery)

    def _fill_gap(self, group: str, cursor: list[int], delivery: broker_pb2.Delivery) -> None:
        """Messages between the cursor and ``delivery`` did not arrive (the broker's
        queue for this worker was full): ask for them, hold newer ones meanwhile."""
        self._held[group] = [delivery]
        link = self._link_for(group)
        request = next(self._requests)
        self._group_requests[request] = group
        link.resume(
            broker_pb2.Resume(group=group, epoch=cursor[0], offset=cursor[1], request=request),
            retry=False,
        )

    def _on_group_delivery(self, delivery: broker_pb2.Delivery) -> None:
        """Hand a delivery on to its local members (or its channel), moving the
        group's cursor."""
        if delivery.epoch:
            cursor = self.cursors.get(delivery.group)
            if cursor is None:
                self.cursors[delivery.group] = [delivery.epoch, delivery.offset]
            elif delivery.epoch == cursor[0] and delivery.offset <= cursor[1]:
                return
            else:
                cursor[0], cursor[1] = delivery.epoch, delivery.offset
        try:
            decoded = codec.decode(delivery.event)
        except ValueError as exc:
            metrics.UNDECODABLE_EVENTS.inc()
            metrics.DELIVERIES_LOST.labels("undecodable").inc()
            logger.error(
                "undecodable event for %r dropped: %s", delivery.group or delivery.channel, exc
            )
            return
        if is_lifecycle_type(decoded.type):
            self._drop_lifecycle(delivery, decoded.type)
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
            size = len(delivery.event.body)
            position = (delivery.group, delivery.epoch, delivery.offset)
            held = self._member_held.get(delivery.group) if self._member_held else None
            # Excluded channels are skipped here, by the worker that holds them: the
            # broker never looks at members.
            excluded = frozenset(delivery.exclude) if delivery.exclude else None
            for channel in members:
                if excluded is not None and channel in excluded:
                    continue
                if held is not None and channel in held:
                    held[channel].append(delivery)  # catching up: this comes after
                    continue
                # Each consumer gets its own dict, as with Channels' per-channel queues.
                self._deliver_to(channel, dict(event) if copy else event, size, position)
        elif decoded.kind == codec.CONTROL:
            self._apply_control(delivery.channel, decoded)
        else:
            self._deliver_to(delivery.channel, event_from_wire(decoded))

    def _drop_lifecycle(self, delivery: broker_pb2.Delivery, event_type: str) -> None:
        """Senders refuse ``websocket.*`` events (``ChannelLayer.encode_event``); one that
        still arrives (an older sender, a hand-made publish) would end its consumers
        and leave their sockets open. It is dropped, once per worker, and counted."""
        metrics.LIFECYCLE_EVENTS_DROPPED.inc()
        logger.warning(
            "dropped a %r event that came through the channel layer for %r: only the "
            "server produces websocket.* events",
            event_type,
            delivery.group or delivery.channel,
        )

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
            joined = not self.index.has(group, channel)
            if self.index.add(group, channel):
                # Nobody waits on a remote add; the answer sets the group's cursor.
                link = self._link_for(group)
                request = next(self._requests)
                self._group_requests[request] = group
                link.resume(broker_pb2.Resume(group=group, request=request), retry=False)
            if joined:
                self._report_joined(group, channel)  # after the subscription, as the broker wants
        elif decoded.type == "group_discard" and self.index.has(group, channel):
            self._report_left(group, channel)
            if self.index.discard(group, channel):
                self._unsubscribe(group)
        metrics.LOCAL_GROUPS.set(len(self.index))

    def _deliver_to(
        self,
        channel: str,
        event: Any,
        size: int = 0,
        position: Position | None = None,
    ) -> bool:
        """Hand an event of ``size`` bytes to a local consumer or receive queue; False
        when a receive queue is full. A consumer whose client does not keep up is
        closed as too slow instead (its backlog passed its bound, or the worker's)."""
        connection = self.connections.get(channel)
        if connection is None:
            queue = self._queues.get(channel)
            if queue is None:
                return True  # gone: as in Channels, not the sender's error
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                metrics.QUEUE_DROPPED.inc()
                metrics.DELIVERIES_LOST.labels("receive_queue_full").inc()
                return False
            return True
        self.tally.deliveries += 1
        if connection.deliver(event, size, position):
            return True
        if connection.pending_bytes > connection.max_pending_bytes:
            connection.close_slow(
                f"{connection.pending_bytes} bytes of events wait for it "
                f"(SLOW_CLIENT_BYTES is {connection.max_pending_bytes})"
            )
        elif self.budget is not None:
            # The worker's budget is spent: the client furthest behind gives way.
            furthest = max(self.connections.values(), key=lambda c: c.pending_bytes)
            furthest.close_slow(
                f"{furthest.pending_bytes} bytes of events wait for it, the most of any "
                f"client, and this worker's {self.budget.used} bytes passed "
                f"WORKER_BUFFER_BYTES ({self.budget.limit})"
            )
        return True

    # Channels that are not connections ------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        """A channel of this worker that code here reads with :meth:`receive`."""
        name = f"{self.edge_id}!{prefix}.{secrets.token_hex(10)}"  # unguessable, as above
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


def _before(answer: broker_pb2.Recovered) -> Position:
    """The position just before the deliveries an answer carries."""
    return (answer.group, answer.epoch, answer.offset - len(answer.deliveries))
