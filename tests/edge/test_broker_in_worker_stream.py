"""The in-worker Attach stream keeps the servicer's rules: refusals arrive as the status
a gRPC stream would end with, acknowledgements and barriers come back in order, and an
edge that stops reading gets its drops counted, never piled up in memory.

These drive the broker's real servicer and shard through ``LocalAttachCall``, the
object a worker hosting the broker gives its link (no gRPC in between, by design).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from django_ws_broker.servicer import BrokerServicer
from django_ws_broker.shard import ShardState
from django_ws_client.transport.config import parse_config
from django_ws_edge.broker_in_worker import IN_FLIGHT_FRAMES, LocalAttachCall
from django_ws_edge.links import BrokerLink, LinkHandlers
from django_ws_proto import codec
from django_ws_proto.batching import LINGER_SECONDS
from django_ws_proto.v1 import broker_pb2

from support.wire import edge_id, edge_key, edge_metadata, event

pytestmark = pytest.mark.timeout(60)


def hello(name: str, subscribe: tuple[str, ...] = ()) -> broker_pb2.EdgeFrame:
    return broker_pb2.EdgeFrame(
        hello=broker_pb2.Hello(edge_id=edge_id(name), ordinal=0, shards=1),
        subscribe=list(subscribe),
    )


async def attached(servicer: BrokerServicer, name: str, *groups: str) -> LocalAttachCall:
    call = LocalAttachCall(servicer, edge_metadata(name))
    await call.write(hello(name, groups))
    welcome = await asyncio.wait_for(call.read(), 5)
    assert welcome is not grpc.aio.EOF and welcome.HasField("welcome"), welcome
    return call


async def read_until_synced(call: LocalAttachCall, token: int) -> list[broker_pb2.BrokerFrame]:
    frames = []
    while True:
        frame = await asyncio.wait_for(call.read(), 5)
        assert frame is not grpc.aio.EOF
        frames.append(frame)
        if frame.synced == token:
            return frames


async def stream_end(call: LocalAttachCall) -> grpc.aio.AioRpcError:
    """The status the stream's next read ends with (printed), as a gRPC call's would."""
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(call.read(), 5)
    print(f"\n{ended.value.code().name}: {ended.value.details()}")
    return ended.value


async def test_a_hello_whose_id_the_key_does_not_derive_ends_like_a_grpc_stream() -> None:
    servicer = BrokerServicer(ShardState())
    call = LocalAttachCall(servicer, edge_metadata("someone else"))
    await call.write(hello("mallory"))
    refused = await stream_end(call)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "an edge can only attach as itself" in (refused.details() or "")
    # Every later read ends the same way; nothing of the edge stays attached.
    with pytest.raises(grpc.aio.AioRpcError):
        await call.read()
    assert servicer.shard.edges == {}


async def test_a_stream_cancelled_before_it_ran_releases_its_reader_and_writer() -> None:
    servicer = BrokerServicer(ShardState())
    call = LocalAttachCall(servicer, edge_metadata("edge"))
    # The queue to the servicer fills before its handler has run at all...
    for token in range(IN_FLIGHT_FRAMES):
        await call.write(broker_pb2.EdgeFrame(sync=token + 1))
    blocked = asyncio.ensure_future(call.write(broker_pb2.EdgeFrame(sync=99)))
    # ... and the edge ends the call: neither side may wait forever.
    call.cancel()
    done, _ = await asyncio.wait({blocked}, timeout=5)
    ended = await stream_end(call)
    print(f"the waiting write: {'let go' if done else 'still waiting'}; read: {ended.code().name}")
    assert done
    blocked.exception()  # retrieved: it may fail, as a write after the end does
    assert ended.code() == grpc.StatusCode.CANCELLED
    with pytest.raises(grpc.aio.AioRpcError):
        await call.write(broker_pb2.EdgeFrame(sync=100))
    assert servicer.shard.edges == {}


async def test_a_handler_that_fails_ends_the_stream_as_grpc_would() -> None:
    servicer = BrokerServicer(ShardState())
    call = LocalAttachCall(servicer, edge_metadata("edge"))
    # Not a frame at all (no edge writes one; this is the servicer failing on it): a
    # gRPC server ends such a call with UNKNOWN, and so does the in-worker stream,
    # rather than leaving the edge's read waiting.
    await call.write(object())  # type: ignore[arg-type]
    ended = await stream_end(call)
    assert ended.code() == grpc.StatusCode.UNKNOWN
    assert "AttributeError" in (ended.details() or "")
    with pytest.raises(grpc.aio.AioRpcError):
        await call.write(broker_pb2.EdgeFrame(sync=1))
    assert servicer.shard.edges == {}


async def test_publishes_are_acknowledged_and_fanned_out_in_order() -> None:
    servicer = BrokerServicer(ShardState())
    member = await attached(servicer, "member", "room")
    sender = await attached(servicer, "sender")
    publishes = [
        broker_pb2.Publish(group="room", event=event(f"m {i}"), seq=i + 1) for i in range(200)
    ]
    await sender.write(broker_pb2.EdgeFrame(publish=publishes, sync=1))
    acked = max(frame.acked for frame in await read_until_synced(sender, 1))
    await member.write(broker_pb2.EdgeFrame(sync=2))
    frames = await read_until_synced(member, 2)
    texts = [codec.decode(d.event).body["text"] for f in frames for d in f.deliveries]
    offsets = [d.offset for f in frames for d in f.deliveries]
    print(f"\nacked through {acked}; the member got {len(texts)} in {len(frames)} frames")
    assert acked == 200
    assert texts == [f"m {i}" for i in range(200)]
    assert offsets == list(range(offsets[0], offsets[0] + 200))
    # Cancelling the call ends the servicer's handler, which detaches the edge.
    member.cancel()
    await member.wait_closed()
    assert set(servicer.shard.edges) == {edge_id("sender")}
    sender.cancel()
    await sender.wait_closed()


async def test_an_edge_that_stops_reading_gets_its_drops_counted() -> None:
    queue_size = 50
    servicer = BrokerServicer(ShardState(queue_size=queue_size))
    stalled = await attached(servicer, "stalled", "room")
    sender = await attached(servicer, "sender")
    sent = 0
    for batch in range(40):
        publishes = [
            broker_pb2.Publish(group="room", event=event(f"{batch}.{i}")) for i in range(500)
        ]
        await sender.write(broker_pb2.EdgeFrame(publish=publishes))
        sent += len(publishes)
    await sender.write(broker_pb2.EdgeFrame(sync=1))
    await read_until_synced(sender, 1)
    edge = servicer.shard.edges[edge_id("stalled")]
    # Bounded on both sides: frames in flight to the edge, and the shard's own queue.
    assert stalled._to_edge.qsize() <= IN_FLIGHT_FRAMES
    assert edge.queue.qsize() <= queue_size + 1
    # Now it reads, up to a barrier queued behind everything: what it got, plus what
    # the broker says it dropped, is all of it.
    await stalled.write(broker_pb2.EdgeFrame(sync=2))
    frames = await read_until_synced(stalled, 2)
    got = sum(len(frame.deliveries) for frame in frames)
    dropped = sum(frame.dropped for frame in frames)
    print(
        f"\n{sent} sent to an edge that did not read: {got} delivered, {dropped} dropped "
        f"and counted (shard: {servicer.shard.counters.dropped_queue_full})"
    )
    assert dropped > 0 and got > 0
    assert got + dropped == sent
    assert servicer.shard.counters.dropped_queue_full == dropped
    stalled.cancel()
    sender.cancel()


async def test_an_edge_that_cancels_with_frames_unread_leaves_nothing_waiting() -> None:
    servicer = BrokerServicer(ShardState())
    stalled = await attached(servicer, "stalled", "room")
    sender = await attached(servicer, "sender")
    deadline = asyncio.get_running_loop().time() + 10
    i = 0
    while not stalled._to_edge.full():  # a few dozen, over the broker's lingers
        assert asyncio.get_running_loop().time() < deadline, "the queue never filled"
        i += 1
        await sender.write(
            broker_pb2.EdgeFrame(publish=[broker_pb2.Publish(group="room", event=event(f"{i}"))])
        )
        for _ in range(5):
            await asyncio.sleep(0)  # the broker applies it and writes a frame of its own
    await sender.write(broker_pb2.EdgeFrame(sync=1))
    await read_until_synced(sender, 1)
    unread = stalled._to_edge.qsize()
    # The edge gives up on the stream without reading, as a link does on reconnect:
    # like a cancelled gRPC call, its unread frames are dropped and its read ends.
    stalled.cancel()
    await stalled.wait_closed()
    ended = await stream_end(stalled)
    sender.cancel()
    await sender.wait_closed()
    await asyncio.sleep(0)
    left = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    print(f"{unread} frames unread at cancel; read: {ended.code().name}; tasks left: {left}")
    assert unread == IN_FLIGHT_FRAMES
    assert ended.code() == grpc.StatusCode.CANCELLED
    assert left == []
    assert servicer.shard.edges == {}


async def test_a_busy_stream_in_the_process_writes_each_frame_without_lingering() -> None:
    # A gRPC stream that wrote within the last millisecond lingers LINGER_SECONDS to
    # gather a bigger frame (django_ws_proto.batching); here a frame costs no more than
    # what is in it, so the broker hands each one over at once.
    servicer = BrokerServicer(ShardState())
    member = await attached(servicer, "member", "room")
    sender = await attached(servicer, "sender")
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(20):
        await sender.write(
            broker_pb2.EdgeFrame(publish=[broker_pb2.Publish(group="room", event=event(f"{i}"))])
        )
        frame = await asyncio.wait_for(member.read(), 5)
        assert [codec.decode(d.event).body["text"] for d in frame.deliveries] == [f"{i}"]
    took = loop.time() - started
    print(f"\n20 publishes, each delivered in a frame of its own, in {took * 1000:.1f} ms")
    # Lingering, each frame after the first would wait about LINGER_SECONDS.
    assert took < 5 * LINGER_SECONDS
    member.cancel()
    sender.cancel()


async def test_a_busy_link_to_the_broker_in_the_process_writes_without_lingering(
    tmp_path: Path,
) -> None:
    # The edge's end of the same rule: a link whose Attach stream is opened in the
    # process (what BROKER_IN_WORKER gives it) writes each publish as it comes, where
    # a link over gRPC that wrote within the last millisecond would gather the next
    # LINGER_SECONDS' worth into one frame.
    servicer = BrokerServicer(ShardState())
    sizes: list[int] = []  # publishes per frame the link wrote

    def open_attach(metadata: tuple[tuple[str, str], ...]) -> LocalAttachCall:
        call = LocalAttachCall(servicer, metadata)
        write = call.write

        async def counted(frame: broker_pb2.EdgeFrame) -> None:
            if frame.publish:
                sizes.append(len(frame.publish))
            await write(frame)

        call.write = counted  # type: ignore[method-assign]
        return call

    up = asyncio.Event()
    address = f"unix:{tmp_path / 'unused.sock'}"  # never dialled: open_attach is replaced
    link = BrokerLink(
        ordinal=0,
        address=address,
        shards=1,
        edge_id=edge_id("link"),
        edge_key=edge_key("link"),
        config=parse_config({"address": address}),
        handlers=LinkHandlers(
            resumes_owned=lambda _ordinal, _sent: [],
            members_owned=lambda _ordinal: [],
            on_frame=lambda _ordinal, _frame: None,
            on_state=lambda _ordinal, is_up: up.set() if is_up else None,
        ),
    )
    link.open_attach = open_attach
    link.start()
    try:
        await asyncio.wait_for(up.wait(), 5)
        for i in range(20):
            await link.publish(broker_pb2.Publish(group="room", event=event(f"{i}")))
            # Let the link's writer run, and no longer: each publish comes well inside
            # the busy window of the write before it, so a lingering link would wait
            # and gather the rest into one frame.
            for _ in range(3):
                await asyncio.sleep(0)
        await link.sync()
    finally:
        await link.close()
    print(f"\npublishes per frame the link wrote: {sizes}")
    assert sum(sizes) == 20
    # Lingering, all but the first would share a frame or two; here a frame holds what
    # queued while the last one was written.
    assert len(sizes) >= 15, sizes
