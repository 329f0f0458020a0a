"""Bad input at a real broker over real gRPC: it stays up, stays bounded, names the cause.

Every test ends by checking the broker still answers SERVING and serves a well-formed
stream; memory is measured (RSS) after a warm-up round and again after many rounds of
the same bad input, so a leak shows up as growth. Refusing clients without a
certificate when TLS client auth is on is covered by tests/e2e/test_tls.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import grpc
import pytest

from django_ws_broker.shard import EDGE_ID_RULE, REPLACED
from django_ws_proto import codec
from django_ws_proto.names import CHANNEL_RULE, GROUP_RULE
from django_ws_proto.ring import ShardRing
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

from support import wire
from support.clients import join
from support.processes import Broker, Stack, free_port, wait_until
from support.resources import MIB, rss, scrape, total

pytestmark = pytest.mark.timeout(90)

# Not protobuf: a varint that never ends, a length past the end, a field number of zero.
GARBAGE = [b"\xff" * 11, b"\x12\x7fshort", b"\x00\x01", b"\x0a\xff\xff\xff\xff\x0f"]


def metrics_args() -> tuple[str, str, int]:
    port = free_port()
    return "--metrics", f"127.0.0.1:{port}", port


async def still_serving(broker: Broker, channel: grpc.aio.Channel, shards: int = 1) -> None:
    """SERVING, and a well-formed stream still gets its own publish back."""
    assert broker.alive()
    assert await wire.serving(channel)
    stub = broker_pb2_grpc.BrokerStub(channel)
    ring = ShardRing(shards)
    group = next(g for g in (f"after{i}" for i in range(100)) if ring.owner(g) == 0)
    call = await wire.attach(stub, "ws.wellformed", [group], shards=shards)
    await call.write(
        broker_pb2.EdgeFrame(publish=[broker_pb2.Publish(group=group, event=wire.event())])
    )
    frames = await wire.read_until(call, lambda frame: len(frame.deliveries) > 0)
    assert frames[-1].deliveries[0].group == group
    call.cancel()


def report(what: str, before: int, after: int) -> int:
    grown = after - before
    print(f"\n{what}: RSS {before / MIB:.1f} MiB -> {after / MIB:.1f} MiB ({grown / MIB:+.1f} MiB)")
    return grown


async def test_bytes_that_are_not_an_edge_frame_end_the_stream_naming_the_message(
    stack: Stack,
) -> None:
    broker = stack.broker()
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        raw = wire.raw_attach(channel)

        async def garbage_round() -> None:
            for data in GARBAGE:
                call = raw(metadata=wire.edge_metadata("ws.garbage"))
                await call.write(data)
                error = await wire.rpc_error(call)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "not a valid django_ws.v1.EdgeFrame" in (error.details() or "")

        await garbage_round()  # warm-up: first-use allocations are not a leak
        before = rss(broker.pid)
        for _ in range(50):
            await garbage_round()
        grown = report(f"{50 * len(GARBAGE)} garbage streams", before, rss(broker.pid))
        # Each refused stream holds nothing once ended; allow allocator noise only.
        assert grown < 8 * MIB

        # Garbage after a proper hello ends the stream and drops its subscriptions.
        call = raw(metadata=wire.edge_metadata("ws.then.garbage"))
        hello = broker_pb2.EdgeFrame(
            hello=broker_pb2.Hello(edge_id=wire.edge_id("ws.then.garbage")), subscribe=["kept"]
        )
        await call.write(hello.SerializeToString())
        welcome = broker_pb2.BrokerFrame.FromString(await call.read())
        assert welcome.HasField("welcome")
        assert broker.stats().subscriptions == 1
        await call.write(GARBAGE[0])
        error = await wire.rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        wait_until(lambda: broker.stats().subscriptions == 0, 5, "the subscriptions to go")
        assert broker.stats().edges == 0

        # The unary API fails in gRPC's own decoding, before the broker's code: the
        # status is UNKNOWN, and its details still name the message type.
        publish = wire.raw_publish(channel)
        for data in GARBAGE:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await publish(data)
            assert "django_ws.v1.PublishRequest" in (failed.value.details() or "")
        await still_serving(broker, channel)


async def test_a_message_over_the_size_limit_is_refused_naming_the_limit(stack: Stack) -> None:
    limit = 1024 * 1024
    broker = stack.broker(None, "--max-message-bytes", str(limit))
    async with grpc.aio.insecure_channel(broker.listen, options=wire.LARGE_MESSAGES) as channel:
        too_big = broker_pb2.EdgeFrame(
            hello=broker_pb2.Hello(edge_id=wire.edge_id("ws.big")),
            subscribe=["g"] * (limit // 3 + 10),
        ).SerializeToString()
        assert len(too_big) > limit
        call = wire.raw_attach(channel)(metadata=wire.edge_metadata("ws.big"))
        await call.write(too_big)
        error = await wire.rpc_error(call)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"larger than max ({len(too_big)} vs. {limit})" in (error.details() or "")

        before = rss(broker.pid)
        stub = broker_pb2_grpc.BrokerStub(channel)
        oversized = broker_pb2.PublishRequest(
            publish=[broker_pb2.Publish(group="g", event=wire.event(size=limit))]
        )
        for _ in range(20):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Publish(oversized)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"vs. {limit})" in (refused.value.details() or "")
        report("20 oversized publishes", before, rss(broker.pid))
        assert rss(broker.pid) - before < 16 * MIB

        # Under the message limit but over what the broker forwards (half of it): the
        # publish is refused by name, so no frame to an edge can ever be too big.
        reply = await stub.Publish(
            broker_pb2.PublishRequest(
                publish=[broker_pb2.Publish(group="g", event=wire.event(size=limit * 6 // 10))]
            )
        )
        assert reply.accepted == 0
        assert reply.refusals[0].reason.startswith("event too large")
        assert f"over the {limit // 2} bytes this broker forwards" in reply.refusals[0].reason
        await still_serving(broker, channel)


async def test_a_burst_of_large_events_reaches_a_lagging_edge_within_the_message_limit(
    stack: Stack,
) -> None:
    """A lagging edge used to get all its queued deliveries in one frame over the gRPC
    message limit: the write failed, the stream died, and the deliveries were lost
    without being counted. Frames are now bounded in bytes as well as in count."""
    broker = stack.broker()  # default limits: 16 MiB messages, 32 MiB queued per edge
    async with grpc.aio.insecure_channel(broker.listen, options=wire.EDGE_LIMITS) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        lagging = await wire.attach(stub, "ws.lagging", ["big"])
        event = wire.event(size=512 * 1024)
        for _ in range(48):  # 24 MiB while the edge reads nothing
            reply = await stub.Publish(
                broker_pb2.PublishRequest(publish=[broker_pb2.Publish(group="big", event=event)])
            )
            assert reply.accepted == 1
        frames = await wire.sync(lagging, 1)
        received = sum(len(frame.deliveries) for frame in frames)
        largest = max(frame.ByteSize() for frame in frames)
        print(
            f"\n48 x 512 KiB to a lagging edge: {received} received in {len(frames)} frames, largest {largest / MIB:.1f} MiB"
        )
        assert received == 48 and sum(frame.dropped for frame in frames) == 0
        assert largest <= 8 * MIB + 64 * 1024
        stats = broker.stats()
        assert stats.delivered == 48 and stats.dropped == 0
        lagging.cancel()
        await still_serving(broker, channel)


async def test_attach_without_a_proper_hello_is_refused_naming_what_is_missing(
    stack: Stack,
) -> None:
    broker = stack.broker(None, "--hello-timeout", "1", "--ordinal", "0", "--shards", "2")
    async with grpc.aio.insecure_channel(broker.listen, options=wire.LARGE_MESSAGES) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)

        async def refused(*frames: broker_pb2.EdgeFrame) -> grpc.aio.AioRpcError:
            call = stub.Attach(metadata=wire.edge_metadata("ws.a"))
            for frame in frames:
                await call.write(frame)
            return await wire.rpc_error(call)

        # No hello at all: a first frame that only subscribes or publishes.
        error = await refused(broker_pb2.EdgeFrame(subscribe=["g"]))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == "the first frame of Attach must carry hello"
        # A hello whose edge id could never be routed to: empty, too long, bad characters.
        for edge_id in ("", "ws." + "x" * 512 * 1024, "ws a", "ws!1", "ws\n", "wé"):
            error = await refused(broker_pb2.EdgeFrame(hello=broker_pb2.Hello(edge_id=edge_id)))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = error.details() or ""
            assert details.startswith(f"bad hello: {EDGE_ID_RULE}") and len(details) < 600
        # A hello for another broker of the cluster.
        error = await refused(
            broker_pb2.EdgeFrame(hello=broker_pb2.Hello(edge_id=wire.edge_id("ws.a"), ordinal=1))
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "this is broker 0, the edge expected broker 1" in (error.details() or "")
        # A stream that never says anything is ended after --hello-timeout; many at once
        # hold nothing once ended.
        before = rss(broker.pid)
        started = time.monotonic()
        calls = [stub.Attach(metadata=wire.edge_metadata("ws.a")) for _ in range(200)]
        errors = await asyncio.gather(*(wire.rpc_error(call) for call in calls))
        took = time.monotonic() - started
        assert {error.code() for error in errors} == {grpc.StatusCode.DEADLINE_EXCEEDED}
        assert "no hello within 1s" in (errors[0].details() or "")
        assert took < 5, f"silent streams were ended after {took:.1f}s"
        report(f"200 silent streams ended in {took:.1f}s", before, rss(broker.pid))
        assert rss(broker.pid) - before < 16 * MIB
        # A stream closed before its hello just ends.
        call = stub.Attach(metadata=wire.edge_metadata("ws.a"))
        await call.done_writing()
        assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        assert broker.stats().edges == 0
        await still_serving(broker, channel, shards=2)


BAD_GROUPS = ["", "g" * 101, "a b", "a/b", "é", "tab\there", "nul\x00", "x" * 200_000]


async def test_bad_group_and_channel_names_are_refused_with_the_rule_named(
    stack: Stack,
) -> None:
    flag, address, port = metrics_args()
    broker = stack.broker(None, flag, address)
    async with grpc.aio.insecure_channel(broker.listen, options=wire.LARGE_MESSAGES) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        call = await wire.attach(stub, "ws.names")
        await call.write(
            broker_pb2.EdgeFrame(
                subscribe=BAD_GROUPS,
                publish=[broker_pb2.Publish(group=g, event=wire.event()) for g in BAD_GROUPS]
                + [broker_pb2.Publish(channel="bad channel!1", event=wire.event())],
                sync=1,
            )
        )
        frames = await wire.read_until(call, lambda frame: frame.synced == 1)
        refusals = [r for frame in frames for r in frame.refusals]
        assert len(refusals) == 2 * len(BAD_GROUPS) + 1
        for refusal in refusals[:-1]:
            assert refusal.reason.startswith(GROUP_RULE), refusal.reason
            # The name is echoed cut short, never megabytes back.
            assert len(refusal.group) <= 120 and len(refusal.reason) < 500
        assert refusals[-1].reason.startswith(CHANNEL_RULE)
        assert broker.stats().subscriptions == 0

        # The unary API: one refusal per bad publish, the good one accepted.
        reply = await stub.Publish(
            broker_pb2.PublishRequest(
                publish=[broker_pb2.Publish(group=g, event=wire.event()) for g in BAD_GROUPS]
                + [broker_pb2.Publish(group="fine", event=wire.event())]
            )
        )
        assert reply.accepted == 1 and len(reply.refusals) == len(BAD_GROUPS)
        assert all(r.reason.startswith(GROUP_RULE) for r in reply.refusals)

        # A request of a hundred thousand bad names gets a bounded answer: the first
        # hundred refusals and one that counts the rest.
        many = broker_pb2.PublishRequest(
            publish=[broker_pb2.Publish(group=f"bad name {i}") for i in range(100_000)]
        )
        reply = await stub.Publish(many)
        assert len(reply.refusals) == 101 and reply.ByteSize() < 64 * 1024
        assert reply.refusals[-1].reason.startswith("99900 more operations were refused")
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        refused = total(samples, "django_ws_broker_refused_total")
        assert refused == 3 * len(BAD_GROUPS) + 1 + 100_000
        call.cancel()
        await still_serving(broker, channel)


async def test_a_stream_replaced_by_one_with_the_same_edge_id_is_ended_and_leaves_nothing(
    stack: Stack,
) -> None:
    """The replaced stream used to stay open and could still subscribe: its
    subscriptions outlived both streams and filled a queue nobody read."""
    broker = stack.broker()
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        before = None
        for round_ in range(30):
            old = await wire.attach(stub, "ws.twin", ["a"])
            new = await wire.attach(stub, "ws.twin", ["b"])
            error = await wire.rpc_error(old)
            assert error.code() == grpc.StatusCode.ABORTED and error.details() == REPLACED
            with pytest.raises(Exception):  # noqa: B017 - any failure to write will do
                await old.write(broker_pb2.EdgeFrame(subscribe=["leak"], sync=1))
                await wire.read_until(old, lambda frame: frame.synced == 1, timeout=2)
            assert (await wire.sync(new, 1))[-1].synced == 1
            stats = broker.stats(include_groups=True)
            assert dict(stats.group_edges) == {"b": 1} and stats.edge_ids == [wire.edge_id("ws.twin")]
            new.cancel()
            wait_until(lambda: broker.stats().edges == 0, 5, "the stream to end")
            if round_ == 0:
                before = rss(broker.pid)
        assert before is not None
        report("30 replaced streams", before, rss(broker.pid))
        assert broker.stats().subscriptions == 0
        await still_serving(broker, channel)


async def test_a_million_subscriptions_are_refused_past_the_limit_with_bounded_memory(
    stack: Stack,
) -> None:
    limit = 1000
    flag, address, port = metrics_args()
    broker = stack.broker(None, "--max-groups-per-edge", str(limit), flag, address)
    async with grpc.aio.insecure_channel(broker.listen, options=wire.LARGE_MESSAGES) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        call = await wire.attach(stub, "ws.greedy")
        burst = broker_pb2.EdgeFrame(subscribe=[f"g{i}" for i in range(1_000_000)], sync=1)
        print(f"\none frame of 1,000,000 subscriptions: {burst.ByteSize() / MIB:.1f} MiB")
        baseline = rss(broker.pid)
        results = []
        for token in (1, 2):
            burst.sync = token
            started = time.monotonic()
            await call.write(burst)
            frames = await wire.read_until(call, lambda f, t=token: f.synced == t, timeout=60)
            took = time.monotonic() - started
            refusals = [r for frame in frames for r in frame.refusals]
            answer = sum(frame.ByteSize() for frame in frames)
            results.append((took, rss(broker.pid), answer))
            # The first burst takes the thousand allowed; everything else is refused,
            # and the answer lists a hundred refusals and counts the rest.
            refused = 1_000_000 - limit  # g0..g999 are taken (or already held)
            assert len(refusals) == 101 and answer < 64 * 1024
            assert refusals[0].reason == (
                f"subscription limit reached: an edge stream may hold at most {limit} groups"
            )
            assert refusals[-1].reason.startswith(f"{refused - 100} more operations were refused")
        for token, (took, memory, answer) in enumerate(results, 1):
            print(
                f"burst {token}: answered in {took:.2f}s with {answer} bytes; broker RSS {memory / MIB:.1f} MiB (baseline {baseline / MIB:.1f})"
            )
        stats = broker.stats()
        assert stats.subscriptions == limit and stats.groups == limit
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        assert total(samples, "django_ws_broker_refused_total") == 2 * (1_000_000 - limit)
        # Applying the frame costs about 60 MiB while it runs (measured in-process: the
        # parsed frame and a str per name in turn) and the answer is bounded. glibc keeps
        # gRPC's freed receive buffers in its heap, so RSS steps up over the first bursts
        # and levels off (about +160 MiB after twelve; flat at +80 MiB with
        # MALLOC_MMAP_THRESHOLD_=131072). Before the answer was bounded, one burst alone
        # took +610 MiB and the reply exceeded the message limit.
        for _, memory, _ in results:
            assert memory - baseline < 192 * MIB
        # The stream still works within its limit.
        await call.write(
            broker_pb2.EdgeFrame(publish=[broker_pb2.Publish(group="g0", event=wire.event())])
        )
        frames = await wire.read_until(call, lambda frame: len(frame.deliveries) > 0)
        assert frames[-1].deliveries[0].group == "g0"
        call.cancel()
        await still_serving(broker, channel)


async def test_a_stream_that_stops_reading_loses_counted_deliveries_and_others_keep_receiving(
    stack: Stack,
) -> None:
    flag, address, port = metrics_args()
    queue_size, queue_bytes = 200, 256 * 1024
    broker = stack.broker(
        None, "--queue-size", str(queue_size), "--queue-bytes", str(queue_bytes), flag, address
    )
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        stalled = await wire.attach(stub, "ws.stalled", ["room"])
        live = await wire.attach(stub, "ws.live", ["room"])
        received: list[str] = []

        async def read_live() -> None:
            while True:
                frame = await live.read()
                if frame is grpc.aio.EOF:
                    return
                received.extend(codec.decode(d.event).body["text"] for d in frame.deliveries)

        reader = asyncio.create_task(read_live())
        sent = 0

        async def publish_batches(batches: int) -> None:
            nonlocal sent
            for _ in range(batches):
                reply = await stub.Publish(
                    broker_pb2.PublishRequest(
                        publish=[
                            broker_pb2.Publish(group="room", event=wire.event(str(sent + i), 1000))
                            for i in range(100)
                        ]
                    )
                )
                assert reply.accepted == 100
                sent += 100

        await publish_batches(10)  # warm-up: the stalled queue and gRPC windows fill
        before = rss(broker.pid)
        await publish_batches(90)
        await wire.until(lambda: len(received) == sent, 20, "the live edge to get everything")
        after = rss(broker.pid)
        reader.cancel()
        assert received == [str(i) for i in range(sent)]  # all of it, in order
        stats = broker.stats()
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        metric = total(samples, "django_ws_broker_dropped_total", reason="edge_queue_full")
        print(
            f"\n{sent} publishes of ~1 KB: live edge got {len(received)}, stalled edge dropped {stats.dropped} (metric {metric:.0f})"
        )
        # What the stalled edge did not drop sits in its queue (at most queue_size) or in
        # gRPC's flow-control windows (a few MiB, between the two processes).
        assert stats.dropped > sent // 2 and metric == stats.dropped
        # The stalled stream holds at most queue_bytes plus what gRPC buffers for one
        # frame in flight: RSS must not follow the 10 MB sent past the warm-up.
        report(f"{sent - 1000} publishes to a stalled stream", before, after)
        assert after - before < 8 * MIB

        # When it reads again, what it gets plus what it is told was dropped is
        # exactly what was sent: no loss goes unreported.
        frames = await wire.sync(stalled, 9)
        got = sum(len(frame.deliveries) for frame in frames)
        told = sum(frame.dropped for frame in frames)
        print(
            f"stalled edge, reading again: {got} delivered + {told} reported dropped = {got + told}"
        )
        assert got + told == sent and told == stats.dropped
        stalled.cancel()
        await still_serving(broker, channel)


async def test_unknown_event_kinds_are_dropped_by_the_receiving_edge_which_keeps_serving(
    stack: Stack,
) -> None:
    """The broker is opaque to event bodies: it forwards them. The edge that cannot
    decode one logs it, drops it, counts it and serves the next one."""
    broker = stack.broker()
    edge = stack.edge(workers=1, broker=broker.listen)
    ws, _ = await join(f"{edge.ws_url}/ws/group/kinds/")
    relay = {"type": "relay", "text": "fine", "from": "test", "group": "kinds"}
    bad = [
        broker_pb2.Event(type="relay", kind=99, body=json.dumps(relay).encode()),
        broker_pb2.Event(type="relay", kind=codec.DICT, body=b"not json"),
        broker_pb2.Event(type="relay", kind=codec.DICT, body=b"[1, 2]"),
        broker_pb2.Event(type="relay", kind=codec.GROUP_MESSAGE, body=b"\xff\xfe"),
    ]
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        reply = await stub.Publish(
            broker_pb2.PublishRequest(
                publish=[broker_pb2.Publish(group="kinds", event=e) for e in bad]
                + [broker_pb2.Publish(group="kinds", event=codec.encode_dict_event(relay))]
            )
        )
        assert reply.accepted == len(bad) + 1  # opaque to the broker
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["text"] == "fine"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)  # nothing else arrived
        await ws.send(json.dumps({"text": "still here"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["text"] == "still here"
        assert await wire.serving(channel)
    await ws.close()
    log = edge.log()
    assert "undecodable event for 'kinds' dropped: unknown event kind 99" in log
    assert log.count("undecodable event for 'kinds' dropped") == len(bad)
    samples = scrape(f"http://127.0.0.1:{edge.health_port}/metrics")
    assert total(samples, "django_ws_edge_undecodable_events_total") == len(bad)
    assert edge.alive() and edge.readyz()[0] == 200


async def test_a_control_event_with_a_bad_group_leaves_the_edge_link_up(stack: Stack) -> None:
    broker = stack.broker()
    edge = stack.edge(workers=1, broker=broker.listen)
    ws, hello = await join(f"{edge.ws_url}/ws/group/ctl/")
    relay = {"type": "relay", "text": "after", "from": "test", "group": "ctl"}
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        for body in (b'{"group": 5}', b'{"group": "bad name"}', b'{"nogroup": 1}'):
            control = broker_pb2.Event(type="group_add", kind=codec.CONTROL, body=body)
            await stub.Publish(
                broker_pb2.PublishRequest(
                    publish=[
                        broker_pb2.Publish(channel=hello["channel"], event=control),
                        broker_pb2.Publish(group="ctl", event=codec.encode_dict_event(relay)),
                    ]
                )
            )
            assert json.loads(await asyncio.wait_for(ws.recv(), 3))["text"] == "after"
    await ws.close()
    assert re.search(r"link to broker \d+ at \S+ failed", edge.log()) is None
