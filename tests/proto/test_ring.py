"""The shard ring: stable owners, minimal movement on rescale, an even spread."""

from __future__ import annotations

import statistics

import pytest

from django_ws_proto.ring import ShardRing, jump_hash, key_hash

GROUPS = [f"group-{i}" for i in range(100_000)]


def test_owner_is_stable_and_in_range() -> None:
    ring = ShardRing(5)
    owners = [ring.owner(g) for g in GROUPS[:1000]]
    assert owners == [ShardRing(5).owner(g) for g in GROUPS[:1000]]
    assert set(owners) == set(range(5))
    # The hash does not depend on the process (PYTHONHASHSEED) or the Python version.
    assert key_hash("chat_room_a") == 1612321248272739572
    assert jump_hash(key_hash("chat_room_a"), 8) == jump_hash(key_hash("chat_room_a"), 8)


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7])
def test_growing_by_one_moves_about_one_over_n_plus_one(shards: int) -> None:
    before, after = ShardRing(shards), ShardRing(shards + 1)
    moved = [g for g in GROUPS if before.owner(g) != after.owner(g)]
    fraction = len(moved) / len(GROUPS)
    expected = 1 / (shards + 1)
    print(
        f"\n{shards}->{shards + 1} shards: moved {fraction:.4f} of 100,000 groups "
        f"(ideal {expected:.4f})"
    )
    assert abs(fraction - expected) < 0.01
    # Every moved group moves to the new shard: nothing shuffles between old ones.
    assert all(after.owner(g) == shards for g in moved)


def test_spread_over_eight_shards_is_even() -> None:
    ring = ShardRing(8)
    counts = [0] * 8
    for group in GROUPS:
        counts[ring.owner(group)] += 1
    ratio = max(counts) / statistics.mean(counts)
    print(f"\nloads over 8 shards: {counts}, max/mean {ratio:.4f}")
    assert ratio < 1.1


def test_channels_of_one_edge_share_an_owner() -> None:
    ring = ShardRing(4)
    assert len({ring.channel_owner(f"ws.abc123!{i:x}") for i in range(100)}) == 1


def test_bad_shard_counts() -> None:
    with pytest.raises(ValueError, match=r"at least 1|>= 1"):
        ShardRing(0)
