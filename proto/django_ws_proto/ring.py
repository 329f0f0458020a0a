"""Which broker owns a group: jump consistent hashing over StatefulSet ordinals.

Jump consistent hash (Lamping and Veach, 2014) maps a key to one of N buckets so that
going from N to N+1 buckets moves only about 1/(N+1) of the keys, all of them to the new
bucket, and spreads keys evenly. Buckets are broker ordinals (``broker-0`` ...), which is
exactly what a StatefulSet gives, so no ring state has to be shared: every edge, every
Django process and every broker computes the same owner from the shard count alone.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from django_ws_proto.names import channel_home

_MASK64 = (1 << 64) - 1


def key_hash(name: str) -> int:
    """A stable 64-bit hash of a name, the same in every process and Python version."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in ``range(buckets)`` that owns the 64-bit ``key``."""
    if buckets < 1:
        raise ValueError(f"the shard count must be at least 1, got {buckets}")
    bucket, candidate = -1, 0
    while candidate < buckets:
        bucket = candidate
        key = (key * 2862933555777941757 + 1) & _MASK64
        candidate = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


class ShardRing:
    """Maps group and channel names to the ordinal of the broker that owns them."""

    def __init__(self, shards: int) -> None:
        if not isinstance(shards, int) or shards < 1:
            raise ValueError(f"the shard count must be a whole number >= 1, got {shards!r}")
        self.shards = shards
        # Owners are looked up on every group operation; names repeat a lot.
        self._owner = lru_cache(maxsize=65536)(self._compute_owner)

    def _compute_owner(self, name: str) -> int:
        if self.shards == 1:
            return 0
        return jump_hash(key_hash(name), self.shards)

    def owner(self, group: str) -> int:
        """The ordinal of the broker that owns ``group``."""
        return self._owner(group)

    def channel_owner(self, channel: str) -> int:
        """The ordinal of the broker that routes sends to ``channel``.

        All channels of one edge worker share an owner, chosen by the worker's id.
        """
        return self._owner(channel_home(channel))

    def __repr__(self) -> str:
        return f"ShardRing(shards={self.shards})"
