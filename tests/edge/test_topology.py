"""The edge's view of the topology: which count it follows, which groups move, and the
links it keeps in step (their shard count and topology epoch go in every hello)."""

from __future__ import annotations

from pathlib import Path

from django_ws_client.transport.config import parse_config
from django_ws_edge.group_index import GroupIndex
from django_ws_edge.links import BrokerLink, LinkHandlers
from django_ws_edge.topology import EpochFollower, Topology, moves
from django_ws_proto.ring import ShardRing
from django_ws_proto.v1 import broker_pb2


def welcome(shards: int, epoch: int, boot_id: str = "boot-a") -> broker_pb2.Welcome:
    return broker_pb2.Welcome(shards=shards, topology_epoch=epoch, boot_id=boot_id)


def test_the_count_with_the_highest_epoch_wins() -> None:
    follower = EpochFollower()
    first = follower.welcome(0, welcome(3, 0), shards=3)
    assert (first.reshard_to, first.reoffer) == (None, False)
    grown = follower.welcome(1, welcome(4, 2, "boot-b"), shards=3)
    assert grown.reshard_to == 4 and follower.epoch == 2
    # A broker not resharded yet still says 3 at an older epoch: no flip-flop.
    behind = follower.welcome(2, welcome(3, 1, "boot-c"), shards=4)
    assert behind.reshard_to is None and follower.epoch == 2
    # A newer epoch with the count already followed moves nothing.
    assert follower.welcome(2, welcome(4, 3, "boot-d"), shards=4).reshard_to is None
    assert follower.epoch == 3


def test_a_welcome_on_a_stream_the_broker_already_had_asks_to_offer_its_groups_again() -> None:
    follower = EpochFollower()
    assert not follower.welcome(1, welcome(3, 0, "boot-a"), shards=3).reoffer
    # Same boot id: the broker announces a new count on its existing stream.
    assert follower.welcome(1, welcome(4, 1, "boot-a"), shards=3).reoffer
    # A restarted broker (new boot id) gets everything in the hello anyway.
    assert not follower.welcome(1, welcome(4, 1, "boot-b"), shards=4).reoffer


def test_growing_moves_groups_only_to_the_new_broker() -> None:
    groups = [f"g{i}" for i in range(2000)]
    moved = moves(groups, ShardRing(3), ShardRing(4))
    print(f"\n3->4 brokers: {len(moved)} of {len(groups)} groups move")
    assert {new for _, _, new in moved} == {3}
    assert 400 < len(moved) < 600
    assert all(ShardRing(3).owner(g) == old for g, old, _ in moved)
    assert moves(groups, ShardRing(3), ShardRing(3)) == []


def no_resumes(ordinal: int, skip: frozenset[str]) -> list[broker_pb2.Resume]:
    return []


def no_members(ordinal: int) -> list[broker_pb2.Member]:
    return []


async def test_resharding_moves_groups_and_states_the_new_epoch_on_every_link(
    tmp_path: Path,
) -> None:
    # Brokers at unix addresses where nothing listens: the links are real, never up.
    addresses = [f"unix:{tmp_path / f'b{k}.sock'}" for k in range(4)]
    config = parse_config({"brokers": addresses, "shards": 3})
    index = GroupIndex()
    groups = [f"g{i}" for i in range(200)]
    for group in groups:
        index.add(group, "ws.e!c1")
    moved: list[tuple[int, str]] = []
    reoffered: list[tuple[int, str]] = []

    def on_moved(link: BrokerLink, group: str) -> None:
        moved.append((link.ordinal, group))

    def on_reoffered(link: BrokerLink, group: str) -> None:
        reoffered.append((link.ordinal, group))

    topology = Topology(
        config,
        edge_id="ws.e",
        edge_key="key",
        handlers=LinkHandlers(no_resumes, no_members, lambda o, f: None, lambda o, u: None),
        index=index,
        on_moved=on_moved,
        on_reoffered=on_reoffered,
    )
    opened = list(topology.links)
    try:
        assert [(link.shards, link.topology_epoch) for link in topology.links] == [(3, 0)] * 3
        topology.on_welcome(0, welcome(3, 0))
        topology.on_welcome(0, welcome(4, 5))  # broker 0 announces 4 brokers, epoch 5
        assert len(topology.links) == 4
        opened = list(topology.links)
        assert [(link.shards, link.topology_epoch) for link in topology.links] == [(4, 5)] * 4
        expected = {g for g in groups if ShardRing(4).owner(g) == 3}
        assert {g for _, g in moved} == expected and {o for o, _ in moved} == {3}
        assert all(topology.link_for(g).ordinal == 3 for g in expected)
        # The announcement came on broker 0's existing stream: its groups are offered again.
        assert {g for _, g in reoffered} == set(topology.groups_owned(0))
        print(f"\n{len(moved)} of {len(groups)} groups moved to broker 3; links state epoch 5")
        # Shrinking closes the link past the new count.
        topology.on_welcome(0, welcome(3, 6))
        assert [(link.shards, link.topology_epoch) for link in topology.links] == [(3, 6)] * 3
        assert opened[3] not in topology.links
    finally:
        for link in opened:
            await link.close()
