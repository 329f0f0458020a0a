"""Member reports are packed into frames without reordering and without one frame
growing past ``FRAME_MEMBERS`` (a reconnect re-sends every member)."""

from __future__ import annotations

from django_ws_edge.links import FRAME_MEMBERS, _FrameBuilder
from django_ws_proto.v1 import broker_pb2


def test_members_are_split_into_bounded_frames_in_order() -> None:
    builder = _FrameBuilder()
    builder.resume(broker_pb2.Resume(group="room", request=1))
    count = FRAME_MEMBERS * 2 + 5
    for n in range(count):
        builder.member(broker_pb2.Member(group="room", channel=f"ws.a!{n}"))
    builder.publish(broker_pb2.Publish(group="room"), 10)
    frames = builder.take()
    assert [len(f.members) for f in frames] == [FRAME_MEMBERS, FRAME_MEMBERS, 5]
    # The subscription comes first, the publish after every member: the broker's order.
    assert frames[0].resume and frames[-1].publish
    channels = [m.channel for f in frames for m in f.members]
    assert channels == [f"ws.a!{n}" for n in range(count)]
