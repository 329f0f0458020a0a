"""Counts, member lists and presence at the owning shard, driven directly."""

from __future__ import annotations

import json

from django_ws_broker.shard import ShardState
from django_ws_proto import codec
from django_ws_proto.v1 import broker_pb2


def member(group: str, channel: str, user: str = "", **kwargs: object) -> broker_pb2.Member:
    info = json.dumps({"id": user, "name": user.title()}).encode() if user else b""
    return broker_pb2.Member(
        group=group, channel=channel, user=user, info=info, presence=bool(user), **kwargs
    )


def events(edge) -> list[tuple[str, str]]:
    found = []
    while not edge.queue.empty():
        item = edge.take_nowait()[0]
        if isinstance(item, broker_pb2.Delivery):
            body = json.loads(item.event.body)
            found.append((body["type"], body["user"]))
    return found


def test_counts_and_channels_over_edges() -> None:
    shard = ShardState()
    a, b = shard.attach("ws.a"), shard.attach("ws.b")
    # Members only of groups the edge subscribes to: what it can make the broker keep
    # is bounded by its groups.
    reason, own = shard.member(a, member("room", "ws.a!0"))
    assert not own and "not subscribed" in (reason or "")
    shard.subscribe(a, "room")
    shard.subscribe(b, "room")
    for n in range(3):
        assert shard.member(a, member("room", f"ws.a!{n}")) == (None, False)
    assert shard.member(b, member("room", "ws.b!0")) == (None, False)
    reply = shard.membership.answer(broker_pb2.MembersRequest(group="room", channels=True))
    assert reply.count == 4 and sorted(reply.channels) == [
        "ws.a!0",
        "ws.a!1",
        "ws.a!2",
        "ws.b!0",
    ]
    shard.member(a, broker_pb2.Member(group="room", channel="ws.a!1", left=True))
    assert shard.membership.answer(broker_pb2.MembersRequest(group="room")).count == 3
    # An edge stream that ends takes its members along.
    shard.detach(a)
    assert shard.membership.answer(broker_pb2.MembersRequest(group="room")).count == 1
    # A report of another edge's channel is refused: an edge speaks for itself only.
    reason, own = shard.member(b, member("room", "ws.a!9"))
    assert own and "not a channel of edge" in (reason or "")
    # A group owned elsewhere refuses the group, not the member (a reshard under way).
    elsewhere = ShardState(ordinal=0, shards=2)
    foreign = next(f"g{n}" for n in range(100) if elsewhere.ring.owner(f"g{n}") == 1)
    edge = elsewhere.attach("ws.c")
    elsewhere.subscribe(edge, foreign)
    reason, own = elsewhere.member(edge, member(foreign, "ws.c!1"))
    assert not own and "not the owner" in (reason or "")


def test_presence_one_join_per_user_a_leave_after_grace_and_none_on_restore() -> None:
    shard = ShardState(presence_grace=2.0)
    edge = shard.attach("ws.a")
    shard.subscribe(edge, "lobby")
    membership = shard.membership
    shard.member(edge, member("lobby", "ws.a!1", "alice"))
    shard.member(edge, member("lobby", "ws.a!2", "alice"))
    assert events(edge) == [("presence.join", "alice")]
    reply = membership.answer(broker_pb2.MembersRequest(group="lobby", presence=True))
    assert [(p.user, p.connections) for p in reply.present] == [("alice", 2)]
    # Last connection gone: the leave waits for the grace period.
    membership.remove("lobby", "ws.a!1", now=100.0)
    membership.remove("lobby", "ws.a!2", now=100.0)
    assert membership.tick(now=101.0) == 0 and events(edge) == []
    # Listed with no connection until the leave, so the list agrees with the events.
    reply = membership.answer(broker_pb2.MembersRequest(group="lobby", presence=True))
    assert [(p.user, p.connections) for p in reply.present] == [("alice", 0)]
    # Back within it: nothing at all.
    shard.member(edge, member("lobby", "ws.a!3", "alice"))
    assert membership.tick(now=103.0) == 0 and events(edge) == []
    membership.remove("lobby", "ws.a!3", now=200.0)
    assert membership.tick(now=202.5) == 1
    assert events(edge) == [("presence.leave", "alice")]
    # A member restored by a hello (a broker restart, a reshard) is no event.
    shard.member(edge, member("lobby", "ws.a!4", "bob", restored=True))
    assert events(edge) == []


def test_presence_events_are_numbered_in_the_group_order() -> None:
    shard = ShardState()
    edge = shard.attach("ws.a")
    shard.subscribe(edge, "lobby")
    shard.publish(broker_pb2.Publish(group="lobby", event=codec.encode_dict_event({"type": "m"})))
    shard.member(edge, member("lobby", "ws.a!1", "alice"))
    offsets = []
    while not edge.queue.empty():
        offsets.append(edge.take_nowait()[0].offset)
    assert offsets == [1, 2]


def test_member_limit_is_refused_by_name() -> None:
    shard = ShardState(max_group_members=2)
    edge = shard.attach("ws.a")
    shard.subscribe(edge, "room")
    assert shard.member(edge, member("room", "ws.a!1")) == (None, False)
    assert shard.member(edge, member("room", "ws.a!2")) == (None, False)
    reason, own = shard.member(edge, member("room", "ws.a!3"))
    assert own and reason is not None and "--max-group-members 2" in reason
    assert shard.membership.answer(broker_pb2.MembersRequest(group="room")).count == 2


def test_exclude_rides_in_the_delivery_and_the_fan_out_stays_per_edge() -> None:
    shard = ShardState()
    a, b = shard.attach("ws.a"), shard.attach("ws.b")
    for edge in (a, b):
        shard.subscribe(edge, "room")
        for n in range(1000):
            shard.member(edge, member("room", f"{edge.edge_id}!{n}", f"u{n}"))
        while not edge.queue.empty():
            edge.take_nowait()
    shard.publish(
        broker_pb2.Publish(
            group="room",
            event=codec.encode_dict_event({"type": "m"}),
            exclude=["ws.a!1", "ws.b!2"],
        )
    )
    deliveries = [a.take_nowait()[0], b.take_nowait()[0]]
    assert a.queue.empty() and b.queue.empty()  # one delivery per edge, not per member
    assert all(list(d.exclude) == ["ws.a!1", "ws.b!2"] for d in deliveries)


def test_reshard_releases_membership_silently() -> None:
    shard = ShardState(ordinal=0, shards=1)
    edge = shard.attach("ws.a")
    groups = [f"lobby{n}" for n in range(20)]
    for group in groups:
        shard.subscribe(edge, group)
        shard.member(edge, member(group, f"ws.a!{group}", "alice"))
    events(edge)
    shard.reshard(2)
    kept = [g for g in groups if shard.ring.owner(g) == 0]
    assert sorted(shard.membership.groups) == sorted(kept)
    assert 0 < len(kept) < len(groups)
    assert shard.membership.tick(now=1e12) == 0


def test_an_answer_lists_refused_members_within_a_bound() -> None:
    from django_ws_broker.servicer import MAX_MEMBER_REFUSALS_LISTED, MAX_REFUSALS_LISTED, _Refusals

    refusals = _Refusals()
    for n in range(50_000):
        refusals.add("member limit reached", group="room", channel=f"ws.a!{n}", member=True)
    listed = refusals.summary()
    assert len(listed) == MAX_REFUSALS_LISTED + MAX_MEMBER_REFUSALS_LISTED + 1
    assert listed[-1].reason.startswith(f"{50_000 - len(listed) + 1} more operations")
