"""Talking to a real broker the way an edge does, or the way a broken client might."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from django_ws_proto import codec
from django_ws_proto.credentials import EDGE_KEY, edge_id_for
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

ATTACH = "/django_ws.v1.Broker/Attach"
PUBLISH = "/django_ws.v1.Broker/Publish"

# Room to send messages past the broker's limit, so the broker is the one refusing.
LARGE_MESSAGES = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


# What an edge accepts (django_ws_client.transport.channels): frames from the broker must fit.
EDGE_LIMITS = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


def edge_key(name: str) -> str:
    """A fixed edge key per test name, so a test can attach "as" a name and know its id."""
    return hashlib.sha256(f"test edge {name}".encode()).hexdigest()


def edge_id(name: str) -> str:
    """The edge id that ``edge_key(name)`` proves."""
    return edge_id_for(edge_key(name))


def edge_metadata(name: str) -> tuple[tuple[str, str], ...]:
    """What an edge named ``name`` sends on Attach to prove its id."""
    return ((EDGE_KEY, edge_key(name)),)


def identity(data: bytes) -> bytes:
    return data


def raw_attach(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamMultiCallable:
    """Attach with no serializer: whatever bytes are written go on the wire as they are."""
    return channel.stream_stream(
        ATTACH, request_serializer=identity, response_deserializer=identity
    )


def raw_publish(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(PUBLISH, request_serializer=identity, response_deserializer=identity)


def event(text: str = "hi", size: int = 0) -> broker_pb2.Event:
    """A valid dict event; ``size`` pads it to about that many bytes (past the client's
    own limit when asked: these tests are the client that skips its checks)."""
    return codec.encode_dict_event(
        {"type": "m", "text": text, "pad": " " * size}, max_bytes=size + 1024
    )


async def attach(
    stub: broker_pb2_grpc.BrokerStub,
    name: str,
    subscribe: list[str] | None = None,
    ordinal: int = 0,
    metadata: tuple[tuple[str, str], ...] = (),
    shards: int = 1,
) -> grpc.aio.StreamStreamCall:
    """An Attach stream past its welcome, as the edge ``name`` (id ``edge_id(name)``)
    believing the cluster has ``shards`` brokers."""
    call = stub.Attach(metadata=(*edge_metadata(name), *metadata))
    await call.write(
        broker_pb2.EdgeFrame(
            hello=broker_pb2.Hello(edge_id=edge_id(name), ordinal=ordinal, shards=shards),
            subscribe=subscribe or [],
        )
    )
    welcome = await asyncio.wait_for(call.read(), 10)
    assert welcome is not grpc.aio.EOF and welcome.HasField("welcome"), welcome
    return call


async def read_until(
    call: grpc.aio.StreamStreamCall,
    done: Callable[[broker_pb2.BrokerFrame], bool],
    timeout: float = 10,
) -> list[broker_pb2.BrokerFrame]:
    """Frames read until one satisfies ``done`` (included)."""
    frames: list[broker_pb2.BrokerFrame] = []
    while True:
        frame = await asyncio.wait_for(call.read(), timeout)
        assert frame is not grpc.aio.EOF, "the broker ended the stream"
        frames.append(frame)
        if done(frame):
            return frames


async def sync(call: grpc.aio.StreamStreamCall, token: int) -> list[broker_pb2.BrokerFrame]:
    """Send a barrier and read until the broker acknowledges it."""
    await call.write(broker_pb2.EdgeFrame(sync=token))
    return await read_until(call, lambda frame: frame.synced == token)


async def rpc_error(call: grpc.aio.StreamStreamCall, timeout: float = 10) -> grpc.aio.AioRpcError:
    """The error that ends a stream (reading until the broker ends it)."""
    try:
        while True:
            frame = await asyncio.wait_for(call.read(), timeout)
            if frame is grpc.aio.EOF:
                raise AssertionError("the stream ended without an error")
    except grpc.aio.AioRpcError as exc:
        return exc


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for ``predicate`` without blocking the event loop (tasks keep running)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def serving(channel: grpc.aio.Channel) -> bool:
    """Whether the broker answers its health check with SERVING."""
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=5
    )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
