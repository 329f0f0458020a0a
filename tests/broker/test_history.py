"""The broker's positions and history, tested directly: no gRPC, no sockets."""

from __future__ import annotations

import time

import pytest

from django_ws_broker.history import LOST_EPOCH, LOST_TRIMMED, History
from django_ws_broker.shard import ShardState
from django_ws_proto.v1 import broker_pb2


def publish(history: History, group: str, text: str) -> broker_pb2.Delivery:
    delivery = broker_pb2.Delivery(
        group=group, event=broker_pb2.Event(type="t", body=text.encode())
    )
    history.append(group, delivery, delivery.ByteSize())
    return delivery


def texts(deliveries: list[broker_pb2.Delivery]) -> list[str]:
    return [d.event.body.decode() for d in deliveries]


def test_messages_are_numbered_within_an_epoch_per_group() -> None:
    history = History()
    a1, a2, b1 = publish(history, "a", "1"), publish(history, "a", "2"), publish(history, "b", "1")
    assert (a1.offset, a2.offset, b1.offset) == (1, 2, 1)
    assert a1.epoch == a2.epoch != 0
    assert b1.epoch != a1.epoch  # each group draws its own epoch


def test_replay_gives_exactly_what_came_after_a_position() -> None:
    history = History()
    first = publish(history, "g", "0")
    for n in range(1, 6):
        publish(history, "g", str(n))
    replay = history.replay("g", first.epoch, 2)
    assert texts(replay.deliveries) == ["2", "3", "4", "5"]
    assert (replay.offset, replay.lost) == (6, "")
    assert history.replay("g", first.epoch, 6).deliveries == []  # up to date
    fresh = history.replay("g", 0, 0)  # no position: where the group stands
    assert (fresh.epoch, fresh.offset, fresh.deliveries) == (first.epoch, 6, [])


def test_a_position_from_another_epoch_is_lost_with_the_whole_new_history() -> None:
    history = History()
    publish(history, "g", "after restart")
    replay = history.replay("g", 12345, 40)
    assert replay.lost == LOST_EPOCH
    assert texts(replay.deliveries) == ["after restart"]
    beyond = history.replay("g", replay.epoch, 99)  # an offset the epoch never reached
    assert beyond.lost == LOST_EPOCH


def test_history_is_bounded_by_count_age_and_bytes() -> None:
    by_count = History(size=3)
    first = publish(by_count, "g", "0")
    for n in range(1, 6):
        publish(by_count, "g", str(n))
    assert by_count.replay("g", first.epoch, 2).lost == LOST_TRIMMED  # offset 3 is gone
    assert texts(by_count.replay("g", first.epoch, 3).deliveries) == ["3", "4", "5"]

    by_age = History(seconds=0.05)
    old = publish(by_age, "g", "old")
    time.sleep(0.1)
    publish(by_age, "g", "new")
    assert by_age.replay("g", old.epoch, 0).lost == LOST_TRIMMED
    by_age.trim_expired()
    assert [e[0] for e in by_age.logs["g"].entries] == [2]

    by_bytes = History(max_bytes=300)
    for n in range(50):
        publish(by_bytes, f"g{n % 5}", "x" * 40)
    assert 0 < by_bytes.bytes <= 300
    assert by_bytes.bytes == sum(log.bytes for log in by_bytes.logs.values())


def test_a_saved_state_continues_the_same_epochs_offsets_and_history() -> None:
    shard = ShardState()
    first = publish(shard.history, "g", "0")
    publish(shard.history, "g", "1")
    assert shard.accept_seq("ws.edge", 7, stream=True)
    state = broker_pb2.BrokerState.FromString(shard.to_state().SerializeToString())
    again = ShardState()
    assert again.load_state(state) == 1
    next_one = publish(again.history, "g", "2")
    assert (next_one.epoch, next_one.offset) == (first.epoch, 3)
    assert texts(again.history.replay("g", first.epoch, 1).deliveries) == ["1", "2"]
    assert not again.accept_seq("ws.edge", 7, stream=True)  # applied before the stop
    with pytest.raises(ValueError, match="broker 0's"):
        ShardState(ordinal=1, shards=2).load_state(state)


def test_publishes_resent_after_a_reconnect_are_applied_once() -> None:
    shard = ShardState()
    assert [shard.accept_seq("ws.a", seq, stream=True) for seq in (1, 2, 3)] == [True] * 3
    assert [shard.accept_seq("ws.a", seq, stream=True) for seq in (2, 3, 4)] == [False, False, True]
    # Unary publishers may retry in any order.
    assert [shard.accept_seq("pub.x", seq, stream=False) for seq in (5, 3, 5, 4, 3)] == [
        True,
        True,
        False,
        True,
        False,
    ]
    assert shard.counters.duplicates == 4
