"""The shard count a caller states (Hello.shards, PublishRequest.shards) is checked by a
real broker: a mismatch at the same topology epoch is refused, while a broker being
resharded one by one keeps talking to callers on either side of the change."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from django_ws_broker.reshard import reshard
from django_ws_proto import codec
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

from support import wire
from support.processes import Stack

pytestmark = pytest.mark.timeout(60)


def hello(name: str, shards: int, epoch: int = 0) -> broker_pb2.EdgeFrame:
    return broker_pb2.EdgeFrame(
        hello=broker_pb2.Hello(
            edge_id=wire.edge_id(name), ordinal=0, shards=shards, topology_epoch=epoch
        )
    )


async def first_answer(
    stub: broker_pb2_grpc.BrokerStub, frame: broker_pb2.EdgeFrame, name: str
) -> broker_pb2.Welcome | grpc.aio.AioRpcError:
    call = stub.Attach(metadata=wire.edge_metadata(name))
    await call.write(frame)
    try:
        answer = await asyncio.wait_for(call.read(), 5)
    except grpc.aio.AioRpcError as exc:
        return exc
    call.cancel()
    assert answer.HasField("welcome")
    return answer.welcome


def publish_request(shards: int, epoch: int = 0) -> broker_pb2.PublishRequest:
    return broker_pb2.PublishRequest(
        publish=[broker_pb2.Publish(channel="ws.nobody.x", event=codec.encode_dict_event({"type": "m"}))],
        shards=shards,
        topology_epoch=epoch,
    )


async def test_a_shard_count_mismatch_is_refused_and_a_newer_topology_is_not(stack: Stack) -> None:
    broker = stack.broker(None, "--ordinal", "0", "--shards", "2")
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        # Same topology epoch, another count: a misconfigured edge, refused at once.
        refused = await first_answer(stub, hello("ws.three", 3), "ws.three")
        assert isinstance(refused, grpc.aio.AioRpcError)
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = refused.details() or ""
        print(f"\nAttach with 3 shards at a 2-shard broker: {refused.code().name}: {details}")
        assert "shard count mismatch" in details and "broker 0 of 2" in details
        assert "DJANGO_WS_SHARDS" in details
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.Publish(publish_request(3), timeout=5)
        assert unary.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "shard count mismatch" in (unary.value.details() or "")
        assert broker.stats().edges == 0 and broker.stats().published == 0

        # The right count, or none stated, is served.
        assert isinstance(await first_answer(stub, hello("ws.two", 2), "ws.two"), broker_pb2.Welcome)
        assert isinstance(await first_answer(stub, hello("ws.none", 0), "ws.none"), broker_pb2.Welcome)
        await stub.Publish(publish_request(2), timeout=5)
        await stub.Publish(publish_request(0), timeout=5)

        # An edge that adopted 3 shards at epoch 4 from a broker resharded before this
        # one: this broker is the one behind, and still serves it.
        welcome = await first_answer(stub, hello("ws.ahead", 3, epoch=4), "ws.ahead")
        assert isinstance(welcome, broker_pb2.Welcome)
        assert (welcome.shards, welcome.topology_epoch) == (2, 0)
        await stub.Publish(publish_request(3, epoch=4), timeout=5)

        # Resharded to 3 at epoch 4: an edge still on 2 from its configuration (epoch 0)
        # is welcomed with the newer count, which it adopts.
        await asyncio.to_thread(reshard, [broker.listen], 3, 4)
        welcome = await first_answer(stub, hello("ws.behind", 2), "ws.behind")
        assert isinstance(welcome, broker_pb2.Welcome)
        assert (welcome.shards, welcome.topology_epoch) == (3, 4)
        # At the broker's own epoch, only its count goes.
        refused = await first_answer(stub, hello("ws.wrong", 2, epoch=4), "ws.wrong")
        assert isinstance(refused, grpc.aio.AioRpcError)
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "broker 0 of 3 (topology epoch 4)" in (refused.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.Publish(publish_request(2, epoch=4), timeout=5)
        assert unary.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert isinstance(await first_answer(stub, hello("ws.right", 3, epoch=4), "ws.right"), broker_pb2.Welcome)


def test_an_edge_configured_with_another_shard_count_is_refused_and_says_why(
    stack: Stack,
) -> None:
    """A real websocket server whose settings count 1 broker, at a broker of 2: its link
    is refused, it stays not ready, and its log names the mismatch and the setting."""
    from support.processes import wait_until

    broker = stack.broker(None, "--ordinal", "0", "--shards", "2")
    edge = stack.edge(workers=1, broker=broker.listen, wait=False)
    wait_until(lambda: "shard count mismatch" in edge.log(), 30, "the refusal in the edge's log")
    status, _ = edge.readyz()
    line = next(line for line in edge.log().splitlines() if "shard count mismatch" in line)
    print(f"\nedge counting 1 broker at a broker of 2: /readyz {status}; log: {line.strip()}")
    assert status == 503
    assert "DJANGO_WS_SHARDS" in line
    assert broker.stats().edges == 0

