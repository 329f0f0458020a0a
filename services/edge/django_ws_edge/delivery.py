"""Group messages from the brokers to this worker's members: in order, once, or a gap.

A group message arrives from the broker once per worker and is decoded once, then
handed to each local member. Every group message carries its position (epoch, offset).
The worker keeps the last position it got from each group (its *cursor*): a message it
already has is skipped, a gap (the broker dropped some for a full queue) is filled from
the broker's history before anything newer is handed on, and after a reconnect the
worker asks for what it missed. A member joining with ``since=`` gets what it missed
the same way, on its own. Where history cannot fill a gap, the members get a
``group.gap`` event and the loss is counted.

:class:`GroupDelivery` has no sockets and no event loop: it reads the membership from a
:class:`GroupIndex`, hands events on through ``deliver`` and asks for history through
``send_resume``, so every rule here is tested by feeding it deliveries and answers.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import SpanKind

from django_ws_client.connection import Position
from django_ws_client.positions import GAP_EVENT_TYPE, GAP_REASONS, parse_position
from django_ws_client.tracing import tracer, tracing_enabled
from django_ws_client.transport.base import event_from_wire, is_lifecycle_type
from django_ws_edge import metrics
from django_ws_edge.group_index import GroupIndex
from django_ws_proto import codec
from django_ws_proto import tracing as wire_tracing
from django_ws_proto.v1 import broker_pb2

logger = logging.getLogger("django_ws.edge")

Deliver = Callable[[str, Any, int, "Position | None"], bool]
"""Hands one event (of a size in bytes, at a position) to one local channel."""

SendResume = Callable[[broker_pb2.Resume, bool], None]
"""Sends a Resume to the group's broker; the flag: send it again after a reconnect."""

ApplyControl = Callable[[str, codec.DecodedEvent], None]
"""Applies a control event (a remote ``group_add``/``group_discard``) to a channel."""


class GroupDelivery:
    """Per-group cursors, held deliveries and catch-up requests of one worker."""

    def __init__(
        self,
        index: GroupIndex,
        *,
        deliver: Deliver,
        send_resume: SendResume,
        apply_control: ApplyControl,
        edge_id: str = "",
    ) -> None:
        self.index = index
        self._deliver = deliver
        self._send_resume = send_resume
        self._apply_control = apply_control
        self.edge_id = edge_id
        # Group -> [epoch, offset] of the last message this worker got from it.
        self.cursors: dict[str, list[int]] = {}
        # Resume requests in flight: the worker's own (request -> group) and a member's
        # (request -> group, channel).
        self._group_requests: dict[int, str] = {}
        self._member_requests: dict[int, tuple[str, str]] = {}
        # Request numbers are unique across this worker's links.
        self._requests = itertools.count(1)
        # Live messages held back while a gap is filled: for the whole worker (group ->
        # deliveries) and for members catching up (group -> channel -> deliveries).
        self._held: dict[str, list[broker_pb2.Delivery]] = {}
        self._member_held: dict[str, dict[str, list[broker_pb2.Delivery]]] = {}

    # Requests ------------------------------------------------------------------------

    def request(self, group: str, *, own: bool = True, member: str | None = None) -> int:
        """Number a Resume request: the worker's own (it sets the group's cursor) and/or
        a member's catch-up (live messages for that member wait until it is answered)."""
        request = next(self._requests)
        if own:
            self._group_requests[request] = group
        if member is not None:
            self._member_held.setdefault(group, {})[member] = []
            self._member_requests[request] = (group, member)
        return request

    def resumes(self, owned: set[str], skip: frozenset[str]) -> list[broker_pb2.Resume]:
        """Subscriptions for a (re)connect: each group of ``owned`` (but those in
        ``skip``) from the worker's cursor. They stand in for the worker's own requests
        still unanswered for those groups, which are forgotten."""
        if not skip:
            for request, group in list(self._group_requests.items()):
                if group in owned and request not in self._member_requests:
                    del self._group_requests[request]
        resumes = []
        for group in owned - skip:
            request = self.request(group)
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

    def position_or_gap(self, group: str, channel: str, since: str) -> tuple[int, int] | None:
        """The position a client handed back, or None after telling its consumer that
        it cannot be used (a client's word is never trusted)."""
        try:
            return parse_position(since)
        except ValueError as exc:
            logger.warning("%s joined %r from %s", channel, group, exc)
            self.gap(group, "epoch", [channel], None)
            return None

    # Forgetting ----------------------------------------------------------------------

    def forget_group(self, group: str) -> None:
        """The worker no longer follows ``group``."""
        self.cursors.pop(group, None)
        self._held.pop(group, None)
        self._member_held.pop(group, None)

    def forget_member(self, group: str, channel: str) -> None:
        """``channel`` left ``group``: its catch-up, if any, is no longer wanted."""
        held = self._member_held.get(group)
        if held is not None:
            held.pop(channel, None)

    def forget_channel(self, channel: str) -> None:
        """``channel`` finished: no catch-up of it is wanted in any group."""
        for held in self._member_held.values():
            held.pop(channel, None)

    def reset_cursor(self, group: str) -> None:
        """The group moved to another broker, which numbers it in its own epoch."""
        self.cursors.pop(group, None)

    # Answers -------------------------------------------------------------------------

    def on_recovered(self, answer: broker_pb2.Recovered) -> None:
        """A broker answered a Resume: catch up the worker, the member, or both."""
        group = answer.group
        own = self._group_requests.pop(answer.request, None) is not None
        member = self._member_requests.pop(answer.request, None)
        if answer.refused:
            if member is not None:
                self._member_held.get(group, {}).pop(member[1], None)
            return
        if own and group in self.index:
            self._catch_up(group, answer)
        if member is not None:
            self._catch_up_member(group, member[1], answer)

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
                self.gap(group, answer.lost, members, _before(answer))
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
            self.gap(group, answer.lost, [channel], _before(answer))
        for delivery in answer.deliveries:
            self._deliver_one(channel, delivery)
        for delivery in held:
            if delivery.epoch == answer.epoch and delivery.offset > answer.offset:
                self._deliver_one(channel, delivery)

    def _is_held_member(self, group: str, channel: str) -> bool:
        held = self._member_held.get(group)
        return held is not None and channel in held

    def gap(self, group: str, reason: str, channels: list[str], position: Position | None) -> None:
        """Tell members that messages of ``group`` may be missing and cannot be replayed."""
        public_reason = GAP_REASONS.get(reason, reason)
        metrics.DELIVERIES_LOST.labels(
            "broker_lost" if reason == "epoch" else "history_trimmed"
        ).inc(len(channels))
        for channel in channels:
            self._deliver(
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
        self._deliver(
            channel,
            event_from_wire(decoded),
            len(delivery.event.body),
            (delivery.group, delivery.epoch, delivery.offset),
        )

    # Live deliveries -----------------------------------------------------------------

    def on_delivery(self, delivery: broker_pb2.Delivery) -> None:
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
        request = self.request(group)
        self._send_resume(
            broker_pb2.Resume(group=group, epoch=cursor[0], offset=cursor[1], request=request),
            False,
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
                self._deliver(channel, dict(event) if copy else event, size, position)
        elif decoded.kind == codec.CONTROL:
            self._apply_control(delivery.channel, decoded)
        else:
            self._deliver(delivery.channel, event_from_wire(decoded), 0, None)

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


def _before(answer: broker_pb2.Recovered) -> Position:
    """The position just before the deliveries an answer carries."""
    return (answer.group, answer.epoch, answer.offset - len(answer.deliveries))
