"""The layer of a process whose channels are all ``new_channel()`` receive queues: what
``django_ws_client.layers.GRPCChannelLayer`` (the ``CHANNEL_LAYERS`` backend of an
unchanged Channels project) runs once per process and event loop.

It is the edge worker's layer, :class:`~django_ws_edge.layer.EdgeChannelLayer`: one
stream per broker, one subscription per group with local members, fan-out here, cursors
and resume after a broker restart. On top, what Channels asks of a layer and an edge
does not need:

- receive queues bounded per channel (Channels' ``channel_capacity``) whose messages
  expire after ``expiry`` seconds unread, counted as lost (``expired``);
- a queue nobody has read for ``expiry`` seconds after its last reader went away (a
  Channels consumer that ended: Channels never says a channel closed) is forgotten,
  with its group memberships, so a long-lived server does not keep one per connection
  it ever served;
- sends that return once the broker has acknowledged the publish, as channels_redis
  returns once Redis has it: a send made in an event loop that ends right after
  (``async_to_sync`` in sync code) is not lost with the loop's tasks;
- ``group.gap`` events (messages lost with a broker's history) reach the receive queues
  only when asked for (``gap_events``): a Channels consumer has no handler for them and
  would stop. The loss is counted either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from django_ws_client.connection import Position
from django_ws_client.exceptions import BrokerUnavailable
from django_ws_client.positions import GAP_EVENT_TYPE
from django_ws_client.transport.config import TransportConfig
from django_ws_edge import metrics
from django_ws_edge.layer import EdgeChannelLayer
from django_ws_edge.links import BrokerLink
from django_ws_edge.local import LocalChannels
from django_ws_proto.names import require_group_name
from django_ws_proto.v1 import broker_pb2

TALLY_SECONDS = 1.0
"""How often the process adds its delivery counts and latencies to the metrics."""


class ExpiringQueue:
    """A bounded FIFO whose entries expire ``expiry`` seconds after they were put.

    Expired entries are dropped (and counted) when read, and when a put needs their room:
    a channel whose reader stopped never blocks its senders for longer than ``expiry``.
    """

    def __init__(self, capacity: int, expiry: float) -> None:
        self.capacity = capacity
        self.expiry = expiry
        self._items: deque[tuple[float, Any]] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self.last_read = time.monotonic()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def readers(self) -> int:
        """Receives waiting on this queue now."""
        return sum(1 for getter in self._getters if not getter.done())

    def _purge(self, now: float) -> None:
        items = self._items
        while items and items[0][0] <= now:
            items.popleft()
            metrics.DELIVERIES_LOST.labels("expired").inc()

    def put_nowait(self, item: Any) -> bool:
        """Queue ``item``; False when the queue holds ``capacity`` unexpired items."""
        now = time.monotonic()
        if len(self._items) >= self.capacity:
            self._purge(now)
            if len(self._items) >= self.capacity:
                return False
        self._items.append((now + self.expiry, item))
        self._wake_one()
        return True

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    async def get(self) -> Any:
        while True:
            self._purge(time.monotonic())
            if self._items:
                self.last_read = time.monotonic()
                return self._items.popleft()[1]
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                if not getter.cancelled():
                    self._wake_one()  # woken, then cancelled: the item is another's
                self.last_read = time.monotonic()
                raise


class ProcessChannels(LocalChannels):
    """The channels of a Channels process: expiring receive queues, with a capacity per
    channel name; no connections."""

    def __init__(
        self,
        capacity: int,
        tally: metrics.Tally,
        *,
        expiry: float,
        capacity_of: Callable[[str], int],
        on_abandoned: Callable[[str], None],
        gap_events: bool = False,
    ) -> None:
        super().__init__(capacity, tally)
        self.expiry = expiry
        self.gap_events = gap_events
        self.capacity_of = capacity_of
        self.on_abandoned = on_abandoned
        self.expiring: dict[str, ExpiringQueue] = {}

    def holds(self, channel: str) -> bool:
        return channel in self.expiring or channel in self.connections

    def new_queue(self, name: str) -> None:
        self.expiring[name] = ExpiringQueue(self.capacity_of(name), self.expiry)

    def forget(self, channel: str) -> None:
        super().forget(channel)
        queue = self.expiring.pop(channel, None)
        if queue is not None and len(queue):
            metrics.DELIVERIES_LOST.labels("expired").inc(len(queue))

    async def receive(self, channel: str) -> Any:
        queue = self.expiring.get(channel)
        if queue is None:
            return await super().receive(channel)  # says what is wrong
        try:
            return await queue.get()
        except asyncio.CancelledError:
            if not queue.readers:
                # Its reader went away (a consumer ended, or a receive timed out):
                # forget the channel unless someone reads it again within expiry.
                asyncio.get_running_loop().call_later(
                    self.expiry, self._reap_if_abandoned, channel, queue
                )
            raise

    def _reap_if_abandoned(self, channel: str, queue: ExpiringQueue) -> None:
        if self.expiring.get(channel) is not queue or queue.readers:
            return
        if time.monotonic() - queue.last_read >= self.expiry:
            self.on_abandoned(channel)

    def deliver(
        self,
        channel: str,
        event: Any,
        size: int = 0,
        position: Position | None = None,
    ) -> bool:
        queue = self.expiring.get(channel)
        if queue is None:
            return super().deliver(channel, event, size, position)
        if not self.gap_events and isinstance(event, dict) and event.get("type") == GAP_EVENT_TYPE:
            return True  # counted where the gap was found
        self.tally.deliveries += 1
        if queue.put_nowait(event):
            return True
        metrics.QUEUE_DROPPED.inc()
        metrics.DELIVERIES_LOST.labels("receive_queue_full").inc()
        return False


class ProcessChannelLayer(EdgeChannelLayer):
    """An edge worker's layer whose channels are receive queues, with Channels' limits."""

    def __init__(
        self,
        config: TransportConfig,
        *,
        capacity_of: Callable[[str], int] | None = None,
        gap_events: bool = False,
    ) -> None:
        self._capacity_of = capacity_of or (lambda _name: config.capacity)
        self._gap_events = gap_events
        self._flusher: asyncio.Task[None] | None = None
        self.closed = False
        super().__init__(config)

    def start(self) -> None:
        super().start()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_tally())

    async def close(self) -> None:
        self.closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self.tally.flush()
        await super().close()

    async def _flush_tally(self) -> None:
        """Add the hot-path counts to the metrics now and then, as edge workers do."""
        while True:
            await asyncio.sleep(TALLY_SECONDS)
            self.tally.flush()

    def _make_local(self) -> LocalChannels:
        return ProcessChannels(
            self.capacity,
            self.tally,
            expiry=self.config.expiry,
            capacity_of=self._capacity_of,
            on_abandoned=self.unregister,
            gap_events=self._gap_events,
        )

    async def _publish(self, link: BrokerLink, publish: broker_pb2.Publish) -> None:
        """Return once the broker has the publish, within ``publish_timeout``."""
        deadline = asyncio.get_running_loop().time() + self.config.publish_timeout
        await link.publish(publish)
        acknowledged = link.acknowledged(publish.seq)
        if acknowledged.done():
            acknowledged.result()
            return
        # One send, one future: awaited under a deadline, which costs one timer, where
        # asyncio.wait() would add a callback per future and a set of them per send.
        try:
            async with asyncio.timeout_at(deadline):
                await acknowledged
            return
        except TimeoutError:
            if not link.withdraw(publish.seq):
                return  # acknowledged just as the deadline passed
        raise self._not_acknowledged(1, publish.group or publish.channel)

    async def group_send_many(self, messages: Iterable[tuple[str, Any]]) -> None:
        """Many (group, event) pairs: queued together (one frame per broker), then one
        wait for all their acknowledgements."""
        deadline = asyncio.get_running_loop().time() + self.config.publish_timeout
        sent: list[tuple[BrokerLink, broker_pb2.Publish]] = []
        for group, message in messages:
            require_group_name(group)
            publish = broker_pb2.Publish(
                group=group, event=self.encode_event(message), sent_at=time.time()
            )
            link = self.topology.link_for(group)
            await link.publish(publish)
            sent.append((link, publish))
        self.tally.group_sends += len(sent)
        await self._acknowledged(sent, deadline)

    async def _acknowledged(
        self, sent: list[tuple[BrokerLink, broker_pb2.Publish]], deadline: float
    ) -> None:
        """Wait for the brokers' acknowledgements until ``deadline``; what is still not
        acknowledged then is withdrawn (never sent again) and ``BrokerUnavailable``
        says so."""
        loop = asyncio.get_running_loop()
        waits = [link.acknowledged(publish.seq) for link, publish in sent]
        pending = [w for w in waits if not w.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
        withdrawn = [
            publish
            for (link, publish), wait in zip(sent, waits, strict=True)
            if not wait.done() and link.withdraw(publish.seq)
        ]
        for wait in waits:
            if wait.done() and not wait.cancelled():
                wait.exception()  # a closed link's error is raised below, once
            else:
                wait.cancel()
        failed = [w for w in waits if w.done() and not w.cancelled() and w.exception()]
        if withdrawn or failed:
            first = withdrawn[0] if withdrawn else None
            target = (first.group or first.channel) if first is not None else "a group"
            raise self._not_acknowledged(len(withdrawn) + len(failed), target)

    def _not_acknowledged(self, count: int, target: str) -> BrokerUnavailable:
        """The error of sends whose acknowledgement did not come within the timeout."""
        return BrokerUnavailable(
            f"the broker did not acknowledge {count} message(s) (to {target!r}) within "
            f"{self.config.publish_timeout:g}s (publish_timeout); they were withdrawn and "
            "are not sent again"
        )
