"""Which broker owns what, as this worker sees it: the shard ring, one link per broker,
and moving to another shard count when a broker announces one.

Brokers announce ``(shards, topology epoch)`` in their welcome; the worker adopts the
count with the highest epoch it has seen (so brokers resharded one by one cannot make
it flip-flop), opens links to new brokers, moves the subscriptions of groups whose owner
changed and closes links past the new count. The decisions are plain functions and a
small class (:class:`EpochFollower`, :func:`moves`), tested without brokers;
:class:`Topology` carries them out on the links.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django_ws_client.exceptions import BrokerUnavailable
from django_ws_client.transport.config import TransportConfig
from django_ws_edge import metrics
from django_ws_edge.group_index import GroupIndex
from django_ws_edge.links import BrokerLink, LinkHandlers
from django_ws_proto.ring import ShardRing
from django_ws_proto.v1 import broker_pb2

logger = logging.getLogger("django_ws.edge")

OnGroup = Callable[[BrokerLink, str], None]
"""Called for a group offered to a broker again: report its members there."""


@dataclass(frozen=True)
class WelcomeOutcome:
    """What a welcome asks of the worker."""

    # The shard count to move to, when the welcome carries a newer epoch and count.
    reshard_to: int | None
    # The broker announced a new topology on a stream it already had (same boot id):
    # offer it every group it owns again, which heals subscriptions it refused while
    # it still had the old count.
    reoffer: bool


class EpochFollower:
    """The highest topology epoch seen, and each broker's last boot id."""

    def __init__(self) -> None:
        self.epoch = 0
        self._boot_ids: dict[int, str] = {}

    def welcome(self, ordinal: int, welcome: broker_pb2.Welcome, shards: int) -> WelcomeOutcome:
        """Take in a welcome from broker ``ordinal`` while the worker counts ``shards``."""
        announcement = self._boot_ids.get(ordinal) == welcome.boot_id
        self._boot_ids[ordinal] = welcome.boot_id
        reshard_to = None
        if welcome.topology_epoch > self.epoch:
            self.epoch = welcome.topology_epoch
            if welcome.shards != shards:
                reshard_to = welcome.shards
        return WelcomeOutcome(reshard_to=reshard_to, reoffer=announcement)


def moves(groups: Iterable[str], old: ShardRing, new: ShardRing) -> list[tuple[str, int, int]]:
    """(group, old owner, new owner) of each group whose owner changes between rings."""
    moved = []
    for group in groups:
        before, after = old.owner(group), new.owner(group)
        if before != after:
            moved.append((group, before, after))
    return moved


class Topology:
    """The ring and the links of one worker, kept in step with the brokers' count."""

    def __init__(
        self,
        config: TransportConfig,
        *,
        edge_id: str,
        edge_key: str,
        handlers: LinkHandlers,
        index: GroupIndex,
        on_moved: OnGroup,
        on_reoffered: OnGroup,
    ) -> None:
        self.config = config
        self.edge_id = edge_id
        self.edge_key = edge_key
        self.handlers = handlers
        self.index = index
        self.on_moved = on_moved
        self.on_reoffered = on_reoffered
        self.ring = ShardRing(config.shards)
        self.epochs = EpochFollower()
        self.links: list[BrokerLink] = [self._make_link(k) for k in range(config.shards)]

    @property
    def epoch(self) -> int:
        return self.epochs.epoch

    def _make_link(self, ordinal: int) -> BrokerLink:
        return BrokerLink(
            ordinal=ordinal,
            address=self.config.address_for(ordinal),
            shards=self.ring.shards,
            topology_epoch=self.epoch,
            edge_id=self.edge_id,
            edge_key=self.edge_key,
            config=self.config,
            handlers=self.handlers,
        )

    def link_for(self, group: str) -> BrokerLink:
        """The link to the broker that owns ``group``."""
        return self.links[self.ring.owner(group)]

    def link_for_channel(self, channel: str) -> BrokerLink:
        """The link to the broker that forwards to ``channel``'s worker."""
        return self.links[self.ring.channel_owner(channel)]

    def groups_owned(self, ordinal: int) -> list[str]:
        """The local groups broker ``ordinal`` owns."""
        return [group for group in self.index.groups() if self.ring.owner(group) == ordinal]

    def on_welcome(self, ordinal: int, welcome: broker_pb2.Welcome) -> None:
        """Adopt a shard count announced with a higher topology epoch than ours.

        Brokers are resharded one by one, so a subscription moved early may have been
        refused by a broker that still had the old count. Every broker announces its
        new count on the streams it already has; the edge then offers that broker all
        its groups again (subscribing is idempotent), which heals those refusals.
        """
        outcome = self.epochs.welcome(ordinal, welcome, self.ring.shards)
        for link in self.links:
            link.topology_epoch = self.epoch
        if outcome.reshard_to is not None:
            logger.info(
                "broker %d announced %d shards (epoch %d): moving subscriptions",
                ordinal,
                welcome.shards,
                welcome.topology_epoch,
            )
            self.reshard(outcome.reshard_to)
        if outcome.reoffer and ordinal < len(self.links):
            link = self.links[ordinal]
            for group in self.groups_owned(ordinal):
                link.subscribe(group)
                self.on_reoffered(link, group)

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
        moved = moves(self.index.groups(), old_ring, new_ring)
        for group, old, new in moved:
            if old < len(self.links):
                self.links[old].unsubscribe(group)
            self.links[new].subscribe(group)
            self.on_moved(self.links[new], group)
        for link in self.links:
            link.shards = shards
            link.topology_epoch = self.epoch
        leaving, self.links = self.links[shards:], self.links[:shards]
        for link in self.links:
            if not link.started:
                link.start()
        for link in leaving:
            # What the leaving broker did not acknowledge goes to the groups' new owners.
            for publish in link.take_retained():
                asyncio.get_running_loop().create_task(self._republish(publish))
            asyncio.get_running_loop().create_task(link.close())
        logger.info("now %d shards at %s; %d groups moved", shards, addresses, len(moved))
        return len(moved)

    async def _republish(self, publish: broker_pb2.Publish) -> None:
        try:
            if publish.group:
                await self.link_for(publish.group).publish(publish)
            else:
                await self.link_for_channel(publish.channel).publish(publish)
        except BrokerUnavailable as exc:
            metrics.PUBLISH_LOST.inc()
            logger.error("a publish moved to a new owner was lost: %s", exc)
