"""A real broker process over real gRPC: streams, unary publishes, refusals, health."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from django_ws_proto import codec
from django_ws_proto.ring import ShardRing
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

from support import wire
from support.processes import Stack

pytestmark = pytest.mark.timeout(60)


def event(text: str) -> broker_pb2.Event:
    return codec.encode_dict_event({"type": "chat.message", "text": text})


async def attach(
    stub: broker_pb2_grpc.BrokerStub,
    edge_id: str,
    ordinal: int = 0,
    shards: int = 1,
    subscribe: list[str] | None = None,
) -> grpc.aio.StreamStreamCall:
    call = stub.Attach(metadata=wire.edge_metadata(edge_id))
    await call.write(
        broker_pb2.EdgeFrame(
            hello=broker_pb2.Hello(edge_id=wire.edge_id(edge_id), ordinal=ordinal, shards=shards),
            subscribe=subscribe or [],
        )
    )
    welcome = await asyncio.wait_for(call.read(), 5)
    assert welcome.welcome.ordinal == ordinal and welcome.welcome.boot_id
    return call


async def read_deliveries(call: grpc.aio.StreamStreamCall, count: int) -> list[broker_pb2.Delivery]:
    got: list[broker_pb2.Delivery] = []
    while len(got) < count:
        frame = await asyncio.wait_for(call.read(), 5)
        got.extend(frame.deliveries)
    return got


async def test_streams_fan_out_in_order_once_per_edge(stack: Stack, tmp_path: Path) -> None:
    broker = stack.broker(f"unix:{tmp_path / 'b.sock'}")
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        a = await attach(stub, "ws.a", subscribe=["room"])
        b = await attach(stub, "ws.b", subscribe=["room", "other"])
        # Publishes from a stream, then (once the broker acknowledged them) from the
        # unary API, all to one group.
        await a.write(
            broker_pb2.EdgeFrame(
                publish=[broker_pb2.Publish(group="room", event=event(str(i))) for i in range(50)],
                sync=1,
            )
        )
        got_a: list[broker_pb2.Delivery] = []
        while True:
            frame = await asyncio.wait_for(a.read(), 5)
            got_a.extend(frame.deliveries)
            if frame.synced == 1:
                break
        reply = await stub.Publish(
            broker_pb2.PublishRequest(
                publish=[broker_pb2.Publish(group="room", event=event("unary"))], shards=1
            )
        )
        assert reply.accepted == 1 and not reply.refusals
        got_a.extend(await read_deliveries(a, 51 - len(got_a)))
        got_b = await read_deliveries(b, 51)
        for deliveries in (got_a, got_b):
            texts = [codec.decode(d.event).body["text"] for d in deliveries]
            assert texts == [str(i) for i in range(50)] + ["unary"]
        stats = broker.stats(include_groups=True)
        assert stats.edges == 2 and dict(stats.group_edges) == {"room": 2, "other": 1}
        assert stats.published == 51 and stats.delivered == 102
        a.cancel()
        b.cancel()


async def test_a_stream_for_the_wrong_broker_is_refused(stack: Stack) -> None:
    broker = stack.broker(None, "--ordinal", "1", "--shards", "3")
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        call = stub.Attach(metadata=wire.edge_metadata("ws.x"))
        await call.write(
            broker_pb2.EdgeFrame(
                hello=broker_pb2.Hello(edge_id=wire.edge_id("ws.x"), ordinal=0, shards=3)
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "this is broker 1" in (refused.value.details() or "")
        # Groups owned by another shard are refused by name, with the owner.
        ring = ShardRing(3)
        foreign = next(g for g in (f"g{i}" for i in range(100)) if ring.owner(g) != 1)
        reply = await stub.Publish(
            broker_pb2.PublishRequest(
                publish=[broker_pb2.Publish(group=foreign, event=event("x"))], shards=3
            )
        )
        assert reply.accepted == 0 and "not the owner" in reply.refusals[0].reason


async def test_subscriptions_of_a_closed_stream_are_dropped(stack: Stack) -> None:
    broker = stack.broker()
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        call = await attach(stub, "ws.gone", subscribe=["a", "b"])
        assert broker.stats().subscriptions == 2
        call.cancel()
        for _ in range(100):
            if broker.stats().subscriptions == 0:
                break
            await asyncio.sleep(0.05)
        assert broker.stats().subscriptions == 0 and broker.stats().edges == 0


def test_cli_refuses_an_ordinal_without_a_shard_count(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "django_ws_broker", "--listen", "127.0.0.1:0", "--ordinal", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--shards N is required" in result.stderr
    from django_ws_broker.cli import ordinal_from_hostname

    assert ordinal_from_hostname("django-ws-broker-3") == 3
    assert ordinal_from_hostname("django-ws-broker-12.broker-headless.ns.svc") == 12
    assert ordinal_from_hostname("laptop") is None
