"""The broker's shard state, driven directly: no gRPC, no sockets."""

from __future__ import annotations

import asyncio

import pytest

from django_ws_broker.shard import ShardState
from django_ws_proto import codec
from django_ws_proto.ring import ShardRing
from django_ws_proto.v1 import broker_pb2


def publish(group: str, text: str = "hi") -> broker_pb2.Publish:
    return broker_pb2.Publish(
        group=group, event=codec.encode_dict_event({"type": "m", "text": text})
    )


def drain(edge) -> list[broker_pb2.Delivery]:
    items = []
    while not edge.queue.empty():
        items.append(edge.take_nowait()[0])
    return items


def test_subscribe_publish_unsubscribe() -> None:
    shard = ShardState()
    a, b = shard.attach("ws.a"), shard.attach("ws.b")
    assert shard.subscribe(a, "room") is None
    assert shard.subscribe(b, "room") is None
    assert shard.subscribe(a, "other") is None
    assert shard.publish(publish("room", "one")) is None
    assert [d.group for d in drain(a)] == ["room"] and [d.group for d in drain(b)] == ["room"]
    shard.unsubscribe(b, "room")
    shard.publish(publish("room", "two"))
    assert len(drain(a)) == 1 and drain(b) == []
    assert shard.subscription_count() == 2
    shard.unsubscribe(a, "room")
    assert "room" not in shard.groups
    # Publishing to a group with no subscriber is accepted and delivers nothing.
    assert shard.publish(publish("room")) is None and drain(a) == []


def test_fan_out_is_once_per_edge_stream_whatever_the_members() -> None:
    shard = ShardState()
    edges = [shard.attach(f"ws.e{i}") for i in range(4)]
    for edge in edges:
        # An edge subscribes once per group, however many local members it has.
        for _ in range(2500):
            shard.subscribe(edge, "big")
    shard.publish(publish("big"))
    assert [len(drain(e)) for e in edges] == [1, 1, 1, 1]
    assert shard.counters.delivered == 4


def test_detach_drops_all_subscriptions_of_that_stream() -> None:
    shard = ShardState()
    a, b = shard.attach("ws.a"), shard.attach("ws.b")
    for group in ("g1", "g2", "g3"):
        shard.subscribe(a, group)
    shard.subscribe(b, "g1")
    shard.detach(a)
    assert set(shard.groups) == {"g1"} and list(shard.groups["g1"]) == [b]
    assert "ws.a" not in shard.edges


def test_reattaching_an_edge_id_replaces_the_old_stream() -> None:
    shard = ShardState()
    old = shard.attach("ws.a")
    shard.subscribe(old, "g")
    new = shard.attach("ws.a")
    assert old.closed and shard.edges["ws.a"] is new and "g" not in shard.groups


def test_full_queue_drops_and_counts_without_blocking_others() -> None:
    shard = ShardState(queue_size=3)
    stalled, healthy = shard.attach("ws.stalled"), shard.attach("ws.healthy")
    shard.subscribe(stalled, "g")
    shard.subscribe(healthy, "g")
    for i in range(10):
        shard.publish(publish("g", str(i)))
        drain(healthy)  # this edge keeps reading
    assert stalled.queue.qsize() == 3
    assert stalled.dropped_total == 7 and shard.counters.dropped_queue_full == 7
    assert healthy.dropped_total == 0 and shard.counters.delivered == 13
    assert stalled.take_dropped() == 7 and stalled.take_dropped() == 0
    # Control frames still get through (bounded headroom above the delivery limit).
    assert stalled.offer_control(broker_pb2.BrokerFrame(synced=1))


def test_not_owner_is_refused_with_the_owner_named() -> None:
    ring = ShardRing(3)
    group = next(g for g in (f"g{i}" for i in range(100)) if ring.owner(g) == 2)
    shard = ShardState(ordinal=0, shards=3)
    edge = shard.attach("ws.a")
    reason = shard.subscribe(edge, group)
    assert reason is not None and "not the owner" in reason and "broker 2 of 3" in reason
    assert "not the owner" in (shard.publish(publish(group)) or "")
    assert shard.counters.refused == 2


def test_bad_names_and_limits_are_refused() -> None:
    shard = ShardState(max_groups_per_edge=2)
    edge = shard.attach("ws.a")
    assert "group name" in (shard.subscribe(edge, "bad name") or "")
    assert shard.subscribe(edge, "g1") is None and shard.subscribe(edge, "g2") is None
    assert "subscription limit" in (shard.subscribe(edge, "g3") or "")
    assert shard.subscribe(edge, "g1") is None  # already held: not a new subscription


def test_channel_sends_reach_the_edge_holding_the_channel() -> None:
    shard = ShardState()
    a, b = shard.attach("ws.a"), shard.attach("ws.b")
    event = codec.encode_dict_event({"type": "m"})
    assert shard.publish(broker_pb2.Publish(channel="ws.b!7", event=event)) is None
    assert drain(a) == [] and [d.channel for d in drain(b)] == ["ws.b!7"]
    shard.publish(broker_pb2.Publish(channel="ws.gone!1", event=event))
    assert shard.counters.dropped_no_channel == 1


def test_reshard_releases_groups_no_longer_owned() -> None:
    shard = ShardState(ordinal=0, shards=1)
    edge = shard.attach("ws.a")
    groups = [f"g{i}" for i in range(200)]
    for group in groups:
        shard.subscribe(edge, group)
    released = shard.reshard(2, topology_epoch=5)
    kept = [g for g in groups if ShardRing(2).owner(g) == 0]
    assert released == 200 - len(kept)
    assert sorted(shard.groups) == sorted(kept) and edge.groups == set(kept)
    assert shard.topology_epoch == 5
    leaving = ShardState(ordinal=2, shards=3)
    edge = leaving.attach("ws.b")
    owned = next(g for g in groups if ShardRing(3).owner(g) == 2)
    assert leaving.subscribe(edge, owned) is None
    assert leaving.reshard(2) == 1 and leaving.groups == {}
    assert "not the owner" in (leaving.subscribe(edge, owned) or "")
    with pytest.raises(ValueError, match="at least 1"):
        leaving.reshard(0)


def test_queue_is_bounded_in_bytes_as_well_as_in_count() -> None:
    shard = ShardState(queue_size=1000, queue_bytes=10_000)
    stalled, healthy = shard.attach("ws.stalled"), shard.attach("ws.healthy")
    shard.subscribe(stalled, "g")
    shard.subscribe(healthy, "g")
    big = broker_pb2.Publish(
        group="g", event=broker_pb2.Event(type="m", kind=codec.DICT, body=b"{}" + b" " * 3000)
    )
    for _ in range(10):
        shard.publish(big)
        drain(healthy)
    # About 3 KB each: three fit under 10,000 bytes, the other seven are dropped.
    assert stalled.queue.qsize() == 3 and stalled.queued_bytes <= 10_000
    assert shard.counters.dropped_queue_full == 7 and healthy.queued_bytes == 0
    assert len(drain(stalled)) == 3 and stalled.queued_bytes == 0
    # A single event larger than the whole bound still goes through an empty queue.
    huge = broker_pb2.Publish(
        group="g", event=broker_pb2.Event(type="m", kind=codec.DICT, body=b"{}" + b" " * 20_000)
    )
    shard.publish(huge)
    assert stalled.queue.qsize() == 1 and stalled.queued_bytes > 20_000
    shard.publish(huge)
    assert stalled.queue.qsize() == 1 and stalled.dropped_total == 8


def test_control_frames_past_the_headroom_are_dropped_and_counted() -> None:
    shard = ShardState(queue_size=2)
    edge = shard.attach("ws.a")
    accepted = sum(
        shard.offer_control(edge, broker_pb2.BrokerFrame(synced=n + 1)) for n in range(1500)
    )
    assert accepted == 1002  # the delivery bound plus the control headroom
    assert shard.counters.dropped_control == 498 and edge.queued_bytes > 0
    drain(edge)
    assert edge.queued_bytes == 0


def test_a_replaced_stream_cannot_plant_subscriptions() -> None:
    shard = ShardState()
    old = shard.attach("ws.a")
    new = shard.attach("ws.a")
    reason = shard.subscribe(old, "g")
    assert reason is not None and "replaced" in reason
    assert "g" not in shard.groups and shard.subscription_count() == 0
    shard.detach(old)  # the old stream ending later leaves the new one alone
    assert shard.edges["ws.a"] is new and shard.subscribe(new, "g") is None


def test_edge_ids_follow_the_channel_name_rule() -> None:
    from django_ws_broker.shard import edge_id_error

    assert edge_id_error("ws.0123abcd") is None
    for bad in ("", "x" * 101, "ws!1", "ws a", "ws\n", "é"):
        error = edge_id_error(bad)
        assert error is not None and "an edge id must be 1 to 100 characters" in error
    assert len(edge_id_error("x" * 10_000) or "") < 400  # the echo is cut short


def test_an_event_too_large_to_forward_is_refused_naming_the_limit() -> None:
    shard = ShardState(max_delivery_bytes=1000)
    edge = shard.attach("ws.a")
    shard.subscribe(edge, "g")
    body = b"{}" + b" " * 2000
    for big in (
        broker_pb2.Publish(group="g", event=broker_pb2.Event(type="m", kind=codec.DICT, body=body)),
        broker_pb2.Publish(group="nobody", event=broker_pb2.Event(type="m", body=body)),
        broker_pb2.Publish(channel="ws.a!1", event=broker_pb2.Event(type="m", body=body)),
    ):
        reason = shard.publish(big) or ""
        assert reason.startswith("event too large") and "over the 1000 bytes" in reason
    assert drain(edge) == [] and shard.counters.refused == 3 and shard.counters.published == 0
    assert shard.publish(publish("g")) is None and len(drain(edge)) == 1


def test_a_stream_knows_when_its_oldest_queued_delivery_arrived() -> None:
    # The writer lingers from this moment (django_ws_proto.batching.linger_left).
    shard = ShardState()
    edge = shard.attach("ws.a")
    shard.subscribe(edge, "room")
    shard.publish(publish("room", "one"))
    first = edge.first_queued
    assert first > 0
    shard.publish(publish("room", "two"))
    assert edge.first_queued == first  # the queue was not empty: still the oldest's time
    drain(edge)
    shard.publish(publish("room", "three"))
    assert edge.first_queued >= first  # found the queue empty: a new batch begins
    assert len(drain(edge)) == 1


async def test_a_lingering_writer_stops_waiting_once_a_burst_fills_half_the_queue() -> None:
    # Lingering longer would not make the frame bigger, and would let the burst go on
    # filling the queue until deliveries are dropped.
    shard = ShardState(queue_size=10)
    edge = shard.attach("ws.a")
    shard.subscribe(edge, "room")
    gathering = asyncio.ensure_future(edge.gather(60.0, frame_items=512, frame_bytes=1 << 20))
    for text in "abcd":
        shard.publish(publish("room", text))
        await asyncio.sleep(0)
        assert not gathering.done()
    shard.publish(publish("room", "e"))  # five of ten
    await asyncio.wait_for(gathering, 1.0)
    assert len(drain(edge)) == 5 and shard.counters.dropped_queue_full == 0


async def test_a_lingering_writer_stops_waiting_once_a_frame_is_full_by_bytes() -> None:
    shard = ShardState()
    edge = shard.attach("ws.a")
    shard.subscribe(edge, "room")
    size = edge.queued_bytes
    shard.publish(publish("room", "x" * 100))
    size = edge.queued_bytes - size
    gathering = asyncio.ensure_future(edge.gather(60.0, frame_items=512, frame_bytes=3 * size))
    shard.publish(publish("room", "x" * 100))
    await asyncio.sleep(0)
    assert not gathering.done()
    shard.publish(publish("room", "x" * 100))
    await asyncio.wait_for(gathering, 1.0)


async def test_a_lingering_writer_without_a_burst_waits_its_linger_out() -> None:
    shard = ShardState()
    edge = shard.attach("ws.a")
    shard.subscribe(edge, "room")
    shard.publish(publish("room"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await edge.gather(0.05, frame_items=512, frame_bytes=1 << 20)
    assert loop.time() - started >= 0.045
    assert len(drain(edge)) == 1
