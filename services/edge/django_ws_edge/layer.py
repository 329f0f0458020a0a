"""The channel layer inside an edge worker: the face Channels code sees.

``EdgeChannelLayer`` implements the Channels API (``group_add``, ``group_send``,
``send``, presence, ...) and wires together the parts that do the work, each in its own
module:

- :mod:`django_ws_edge.local`: this worker's connections and receive queues, and
  handing one event to one of them (closing clients that do not keep up);
- :mod:`django_ws_edge.group_index`: which local channel is in which group;
- :mod:`django_ws_edge.delivery`: group messages from the brokers to the local
  members, in order and once (cursors, gaps filled from history, catch-up);
- :mod:`django_ws_edge.member_reports`: telling each group's owner who its members are;
- :mod:`django_ws_edge.topology`: the shard ring, one link per broker, resharding;
- :mod:`django_ws_edge.links`: the streams to the brokers.

The broker that owns a group hears about it only when the group's first local member
joins and its last one leaves; its messages arrive once per worker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

from opentelemetry.trace import SpanKind

from django_ws_client.exceptions import BrokerUnavailable, ChannelFull, GroupRefused
from django_ws_client.tracing import inject_trace, span, tracing_enabled
from django_ws_client.transport.base import (
    channel_of,
    event_from_wire,
    exclude_list,
)
from django_ws_client.transport.config import TransportConfig
from django_ws_client.transport.members import BrokerMembers
from django_ws_edge import metrics
from django_ws_edge.delivery import GroupDelivery
from django_ws_edge.group_index import GroupIndex
from django_ws_edge.links import BrokerLink, LinkHandlers
from django_ws_edge.local import LocalChannels, LocalConsumer
from django_ws_edge.member_reports import MemberReports
from django_ws_edge.topology import Topology
from django_ws_proto import codec
from django_ws_proto.credentials import edge_id_for, new_edge_key
from django_ws_proto.names import channel_home, group_name_error, require_group_name
from django_ws_proto.v1 import broker_pb2

logger = logging.getLogger("django_ws.edge")


class EdgeChannelLayer(BrokerMembers):
    """Local membership plus one :class:`BrokerLink` per broker."""

    def __init__(self, config: TransportConfig, *, edge_key: str | None = None) -> None:
        super().__init__(config)
        # The id is derived from a key only this worker knows: brokers refuse an Attach
        # naming this id without the key, so nobody can take over this worker's stream.
        self.edge_key = edge_key or new_edge_key()
        self.edge_id = edge_id_for(self.edge_key)
        self.tally = metrics.Tally()
        self.index = GroupIndex()
        self.local = self._make_local()
        self.topology = Topology(
            config,
            edge_id=self.edge_id,
            edge_key=self.edge_key,
            handlers=LinkHandlers(
                resumes_owned=self._resumes_owned,
                members_owned=self._members_owned,
                on_frame=self._on_frame,
                on_state=self._on_state,
            ),
            index=self.index,
            on_moved=self._on_moved,
            on_reoffered=self._restore_members,
        )
        self.delivery = GroupDelivery(
            self.index,
            deliver=self.local.deliver,
            send_resume=self._send_resume,
            apply_control=self._apply_control,
            edge_id=self.edge_id,
        )
        self.reports = MemberReports(
            self.index, presence_of=self.presence_member, link_for=self.topology.link_for
        )
        # Groups whose first local member's subscription waits for the broker.
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        # Resume requests someone waits an answer for (a group_add).
        self._answer_waiters: dict[int, asyncio.Future[None]] = {}

    def _make_local(self) -> LocalChannels:
        """This worker's channels (a layer with other receive queues overrides it)."""
        return LocalChannels(self.capacity, self.tally)

    @property
    def links(self) -> list[BrokerLink]:
        """One link per broker, by ordinal (they change when the worker reshards)."""
        return self.topology.links

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

    def register(self, connection: LocalConsumer) -> None:
        self.local.register(connection)

    def unregister(self, channel: str) -> None:
        """Forget a finished connection and take it out of all its groups."""
        self.local.forget(channel)
        self.presence_infos.pop(channel, None)
        self.delivery.forget_channel(channel)
        for group in self.index.groups_of(channel):
            self.reports.left(group, channel)
        for group in self.index.remove_channel(channel):
            self._unsubscribe(group)
        metrics.LOCAL_GROUPS.set(len(self.index))

    def close_stalled_clients(self, now: float) -> None:
        """Close the clients a send has waited on for more than SLOW_CLIENT_SECONDS."""
        self.local.close_stalled(now)

    def _unsubscribe(self, group: str) -> None:
        """The group's last local member left: the worker no longer follows it."""
        self.topology.link_for(group).unsubscribe(group)
        self.delivery.forget_group(group)

    def _is_local(self, channel: str) -> bool:
        return channel_home(channel) == self.edge_id

    # What the links ask of the worker ------------------------------------------------

    def _resumes_owned(self, ordinal: int, skip: frozenset[str]) -> list[broker_pb2.Resume]:
        """Subscriptions for a (re)connect: each group broker ``ordinal`` owns."""
        return self.delivery.resumes(set(self.topology.groups_owned(ordinal)), skip)

    def _members_owned(self, ordinal: int) -> list[broker_pb2.Member]:
        """Every member of the groups broker ``ordinal`` owns, for a hello."""
        return self.reports.for_hello(self.topology.groups_owned(ordinal))

    def _restore_members(self, link: BrokerLink, group: str) -> None:
        self.reports.restore(link, group)

    def _on_moved(self, link: BrokerLink, group: str) -> None:
        """``group`` moved to ``link``'s broker, which numbers it in its own epoch."""
        self.delivery.reset_cursor(group)
        self.reports.restore(link, group)

    def _send_resume(self, resume: broker_pb2.Resume, retry: bool) -> None:
        self.topology.link_for(resume.group).resume(resume, retry=retry)

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
        if not self.local.holds(name):
            return  # the connection already finished: joining would leak membership
        if info is not None:
            self.set_presence_info(name, info)
        self.presence_member(group, name)  # an info dict too large is refused here
        position = None if since is None else self.delivery.position_or_gap(group, name, since)
        link = self.topology.link_for(group)
        joined = not self.index.has(group, name)
        first = self.index.add(group, name)
        waiter: asyncio.Future[None] | None = None
        if first or position is not None:
            if first:
                metrics.LOCAL_GROUPS.set(len(self.index))
            # Live messages for a member catching up wait until its catch-up is dispatched.
            request = self.delivery.request(
                group, own=first, member=name if position is not None else None
            )
            waiter = asyncio.get_running_loop().create_future()
            self._answer_waiters[request] = waiter
            if first:
                self._subscribing[group] = waiter
                waiter.add_done_callback(functools.partial(self._subscribed, group))
            epoch, offset = position or (0, 0)
            link.resume(broker_pb2.Resume(group=group, epoch=epoch, offset=offset, request=request))
        if joined:
            self.reports.joined(group, name)
        # As with Channels, once group_add returns the channel receives the group's
        # messages: wait until the broker has the subscription (once per worker), and
        # has counted the member (one barrier for all the joins of a tick). Both: a join
        # made while another call's subscription is on its way reports in a later frame
        # than that subscription, whose answer can come back first.
        waits: list[asyncio.Future[None]] = []
        subscription = waiter or self._subscribing.get(group)
        if subscription is not None:
            waits.append(subscription)
        if joined and link.up:
            waits.append(link.barrier())
        if waits:
            try:
                async with asyncio.timeout(self.config.timeout):
                    for wait in waits:
                        await asyncio.shield(wait)
            except (TimeoutError, BrokerUnavailable):
                pass  # the link is down or slow: the request is sent again on reconnect
            except GroupRefused:
                await self.group_discard(group, name)
                raise
        refused = self.reports.take_refusal(group, name)
        if refused is not None:
            raise GroupRefused(f"broker {link.ordinal} refused {name} in {group!r}: {refused}")

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
        self.delivery.forget_member(group, name)
        if self.index.has(group, name):
            self.reports.left(group, name)
        if self.index.discard(group, name):
            self._unsubscribe(group)
            metrics.LOCAL_GROUPS.set(len(self.index))

    async def group_send(self, group: str, message: Any, *, exclude: Any = None) -> None:
        require_group_name(group)
        publish = broker_pb2.Publish(
            group=group, event=self.encode_event(message), sent_at=time.time()
        )
        if exclude is not None:
            publish.exclude.extend(exclude_list(exclude))
        self.tally.group_sends += 1
        link = self.topology.link_for(group)
        if not tracing_enabled():
            # Every chat message comes through here: without tracing, no span to open
            # and no trace map to touch.
            await self._publish(link, publish)
            return
        with span("django_ws group_send", SpanKind.PRODUCER, group=group):
            inject_trace(publish.trace)
            await self._publish(link, publish)

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
            await self.topology.link_for(publish.group).publish(publish)

    async def _members(
        self, group: str, *, channels: bool = False, presence: bool = False
    ) -> broker_pb2.MembersReply:
        require_group_name(group)
        return await self.topology.link_for(group).members(
            broker_pb2.MembersRequest(group=group, channels=channels, presence=presence)
        )

    async def send(self, channel: str, message: Any) -> None:
        name = channel_of(channel)
        event = self.encode_event(message)
        if self._is_local(name):
            # Same worker: the sender can be told at once, as Channels does.
            decoded = event_from_wire(codec.decode(event))
            if not self.local.deliver(name, decoded, len(event.body)):
                raise ChannelFull(f"channel {name!r} is over its capacity of {self.capacity}")
            return
        publish = broker_pb2.Publish(channel=name, event=event, sent_at=time.time())
        inject_trace(publish.trace)
        await self._publish(self.topology.link_for_channel(name), publish)

    async def _control(self, op: str, group: str, channel: str) -> None:
        publish = broker_pb2.Publish(channel=channel, event=codec.encode_control(op, group))
        await self._publish(self.topology.link_for_channel(channel), publish)

    async def _publish(self, link: BrokerLink, publish: broker_pb2.Publish) -> None:
        """Hand a publish to its broker's link, which keeps it until the broker
        acknowledges it. A layer whose sends return only once the broker has them (the
        drop-in Channels layer) overrides this."""
        await link.publish(publish)

    async def flush(self) -> None:
        for link in self.links:
            if link.up:
                await link.sync()

    # From the brokers ----------------------------------------------------------------

    def _on_state(self, ordinal: int, up: bool) -> None:
        metrics.LINKS_UP.set(sum(1 for link in self.links if link.up))

    def _on_frame(self, ordinal: int, frame: broker_pb2.BrokerFrame) -> None:
        if frame.HasField("welcome"):
            self.topology.on_welcome(ordinal, frame.welcome)
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
                self.delivery.on_delivery(delivery)
        # Answers come after the deliveries the broker queued before them: the order in
        # which the broker applied everything.
        for recovered in frame.recovered:
            self._on_recovered(ordinal, recovered)

    def _member_refused(self, group: str, channel: str, reason: str) -> None:
        """The broker would not count a member (a limit): it is no member here either,
        and the group_add waiting for it raises."""
        self.reports.refused(group, channel, reason)
        self.delivery.forget_member(group, channel)
        if self.index.discard(group, channel):
            self._unsubscribe(group)
            metrics.LOCAL_GROUPS.set(len(self.index))

    def _on_recovered(self, ordinal: int, answer: broker_pb2.Recovered) -> None:
        if ordinal < len(self.links):
            self.links[ordinal].answered(answer.request)
        group = answer.group
        waiter = self._answer_waiters.pop(answer.request, None)
        if answer.refused:
            logger.error("broker %d refused to subscribe to %r: %s", ordinal, group, answer.refused)
        self.delivery.on_recovered(answer)
        if waiter is None or waiter.done():
            return
        if answer.refused:
            waiter.set_exception(
                GroupRefused(f"broker {ordinal} refused the group {group!r}: {answer.refused}")
            )
        else:
            waiter.set_result(None)

    def _apply_control(self, channel: str, decoded: codec.DecodedEvent) -> None:
        """A ``group_add``/``group_discard`` that another process made for a channel of
        this worker, carried by the broker as a control event."""
        group = decoded.body.get("group", "")
        if not self.local.holds(channel):
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
                request = self.delivery.request(group)
                self._send_resume(broker_pb2.Resume(group=group, request=request), False)
            if joined:
                self.reports.joined(group, channel)  # after the subscription, as the broker wants
        elif decoded.type == "group_discard" and self.index.has(group, channel):
            self.reports.left(group, channel)
            if self.index.discard(group, channel):
                self._unsubscribe(group)
        metrics.LOCAL_GROUPS.set(len(self.index))

    # Channels that are not connections ------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        """A channel of this worker that code here reads with :meth:`receive`."""
        name = f"{self.edge_id}!{prefix}.{secrets.token_hex(10)}"  # unguessable, as above
        self.local.new_queue(name)
        return name

    async def receive(self, channel: str) -> Any:
        return await self.local.receive(channel)
