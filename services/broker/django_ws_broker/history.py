"""Each group's position and recent history, with no gRPC and no sockets in sight.

The owning broker numbers a group's messages (offsets 1, 2, 3, ...) within an *epoch*,
a random number drawn whenever the broker starts a group's history afresh: a broker
that restarted without its saved state cannot know what it had, so positions from
before are recognisably foreign. A bounded history per group (by count, by age, and by
the total bytes of the whole broker) lets an edge or a reconnecting client catch up from
the position of the last message it got, or learn that it cannot, and why.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from django_ws_proto.v1 import broker_pb2

DEFAULT_HISTORY_SIZE = 1_000
"""Messages kept per group for recovery."""

DEFAULT_HISTORY_SECONDS = 300.0
"""How long a message stays in its group's history."""

DEFAULT_HISTORY_BYTES = 64 * 1024 * 1024
"""Bytes of history the whole broker keeps; past it, the groups whose oldest messages
were trimmed least recently give them up first."""

LOST_EPOCH = "epoch"
"""The position belongs to an epoch this broker does not have: it lost the group's
history (it restarted without its state) or the position was never valid."""

LOST_TRIMMED = "trimmed"
"""The position is older than the history kept (count, age or bytes)."""


def new_epoch() -> int:
    """A random, non-zero 63-bit epoch (0 means "no position" on the wire)."""
    return secrets.randbits(63) or 1


@dataclass(eq=False)
class GroupLog:
    """One group's epoch, last offset and kept messages (oldest first).

    A message is kept serialized. Each protobuf message made in Python owns an arena of
    its own, about 1 KiB even for a small delivery, so a history of Delivery objects
    held several times its byte bound (which counts serialized bytes), and every
    publish freed one of those long-cold arenas. Bytes take little more than the
    message's size, and only a replay parses them again.
    """

    epoch: int
    offset: int = 0
    # (offset, serialized Delivery, published at, size in bytes)
    entries: deque[tuple[int, bytes, float, int]] = field(default_factory=deque)
    bytes: int = 0


@dataclass(frozen=True)
class Replay:
    """What a resume gets: the deliveries after its position, or why it cannot."""

    epoch: int
    offset: int
    deliveries: list[broker_pb2.Delivery]
    lost: str = ""


class History:
    """Every owned group's log, bounded per group and in total."""

    def __init__(
        self,
        *,
        size: int = DEFAULT_HISTORY_SIZE,
        seconds: float = DEFAULT_HISTORY_SECONDS,
        max_bytes: int = DEFAULT_HISTORY_BYTES,
        max_replay_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.size = size
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.max_replay_bytes = max_replay_bytes
        # Ordered by when a group last gave up its oldest message: the byte bound takes
        # from the front, so no single busy group is the only one to pay.
        self.logs: OrderedDict[str, GroupLog] = OrderedDict()
        self.bytes = 0
        self.trimmed = 0

    def log(self, group: str) -> GroupLog:
        """The group's log, started in a new epoch if the broker has none."""
        log = self.logs.get(group)
        if log is None:
            log = self.logs[group] = GroupLog(epoch=new_epoch())
        return log

    def append(self, group: str, delivery: broker_pb2.Delivery, size: int) -> None:
        """Number ``delivery`` (sets its epoch and offset) and keep it."""
        log = self.log(group)
        log.offset += 1
        delivery.epoch = log.epoch
        delivery.offset = log.offset
        if self.size <= 0:
            return
        now = time.time()
        log.entries.append((log.offset, delivery.SerializeToString(), now, size))
        log.bytes += size
        self.bytes += size
        if len(log.entries) > self.size:
            self._pop_oldest(group, log)
        if self.bytes > self.max_bytes:
            self._trim_bytes()

    def _pop_oldest(self, group: str, log: GroupLog) -> None:
        size = log.entries.popleft()[3]
        log.bytes -= size
        self.bytes -= size
        self.trimmed += 1
        self.logs.move_to_end(group)

    def _trim_bytes(self) -> None:
        while self.bytes > self.max_bytes:
            for group, log in self.logs.items():
                if log.entries:
                    self._pop_oldest(group, log)
                    break
            else:
                return

    def trim_expired(self, now: float | None = None) -> None:
        """Drop messages past their age (called periodically, so that quiet groups give
        up their memory too)."""
        cutoff = (time.time() if now is None else now) - self.seconds
        for group, log in list(self.logs.items()):
            while log.entries and log.entries[0][2] < cutoff:
                self._pop_oldest(group, log)

    def forget(self, group: str) -> None:
        """Drop a group's log entirely (no subscribers and nothing kept, or released)."""
        log = self.logs.pop(group, None)
        if log is not None:
            self.bytes -= log.bytes

    def replay(self, group: str, epoch: int, offset: int) -> Replay:
        """The deliveries of ``group`` after position (epoch, offset), in order."""
        log = self.log(group)
        if epoch == 0:
            return Replay(log.epoch, log.offset, [])
        if epoch != log.epoch or offset > log.offset:
            # The position is from a history this broker lost. What the current epoch
            # holds from its very start still goes with the answer: messages published
            # after a restart, before the edge re-subscribed, are not lost too.
            start = 0 if log.entries and log.entries[0][0] == 1 else None
            return self._replay_from(log, start, LOST_EPOCH)
        if offset == log.offset:
            return Replay(log.epoch, log.offset, [])
        entries = log.entries
        # Offsets in the log are consecutive: the first one missed sits at a known index,
        # and must still be kept and not past its age.
        if not entries or entries[0][0] > offset + 1:
            return Replay(log.epoch, log.offset, [], LOST_TRIMMED)
        start = offset + 1 - entries[0][0]
        if entries[start][2] < time.time() - self.seconds:
            return Replay(log.epoch, log.offset, [], LOST_TRIMMED)
        return self._replay_from(log, start, "")

    def _replay_from(self, log: GroupLog, start: int | None, lost: str) -> Replay:
        """The kept deliveries from index ``start`` on (None: none), if they fit in
        one answer; otherwise none, and the loss says the history was too long."""
        if start is None:
            return Replay(log.epoch, log.offset, [], lost)
        deliveries: list[broker_pb2.Delivery] = []
        total = 0
        entries = log.entries
        parse = broker_pb2.Delivery.FromString
        for index in range(start, len(entries)):
            data, size = entries[index][1], entries[index][3]
            total += size
            if total > self.max_replay_bytes:
                return Replay(log.epoch, log.offset, [], lost or LOST_TRIMMED)
            deliveries.append(parse(data))
        return Replay(log.epoch, log.offset, deliveries, lost)

    # Saving and loading (a graceful stop and the next start) -----------------------

    def to_state(self, state: broker_pb2.BrokerState) -> None:
        for group, log in self.logs.items():
            saved = state.groups.add(group=group, epoch=log.epoch, offset=log.offset)
            for _offset, data, published_at, _size in log.entries:
                saved.deliveries.add().MergeFromString(data)
                saved.published_at.append(published_at)

    def load_state(self, groups: list[broker_pb2.GroupHistory]) -> int:
        """Take the saved logs of the groups given; returns how many were loaded."""
        for saved in groups:
            log = GroupLog(epoch=saved.epoch, offset=saved.offset)
            for delivery, published_at in zip(saved.deliveries, saved.published_at, strict=True):
                size = delivery.ByteSize()
                log.entries.append(
                    (delivery.offset, delivery.SerializeToString(), published_at, size)
                )
                log.bytes += size
                self.bytes += size
            self.logs[saved.group] = log
        return len(groups)
