"""Fuzzing a real broker over real gRPC: random bytes, and well-formed messages that make
no sense (random names, kinds, bodies, ordinals, huge repeated fields within the size
limit). After every example the broker has answered sensibly (a refusal naming a known
rule, or a status with details); after all of them it is SERVING, holds no stream, and
its memory is bounded. ``FUZZ_EXAMPLES`` raises the number of examples.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from django_ws_broker.shard import REPLACED
from django_ws_proto import codec
from django_ws_proto.names import CHANNEL_RULE, GROUP_RULE
from django_ws_proto.ring import ShardRing
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

from support import wire
from support.fuzzing import examples, fuzz_settings, timeout_for
from support.processes import Broker, Stack, wait_until
from support.resources import MIB, rss

MAX_MESSAGE = 4 * 1024 * 1024
SHARDS = 2  # this broker is ordinal 0 of 2, so ownership refusals are exercised too
BROKER_ARGS = (
    "--shards",
    str(SHARDS),
    "--ordinal",
    "0",
    "--max-message-bytes",
    str(MAX_MESSAGE),
    "--hello-timeout",
    "2",
    "--max-groups-per-edge",
    "5000",
    "--queue-size",
    "2000",
)

KNOWN_REASONS = (
    GROUP_RULE,
    CHANNEL_RULE,
    "not the owner: group ",
    "subscription limit reached",
    "event too large",
    REPLACED,
)
_MORE = re.compile(r"(\d+) more operations were refused \(only the first 100 refusals are listed\)")

# Errors a stream may end with, each for a reason the details name.
STREAM_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: ("bad hello: ", "the first frame", "not a valid"),
    grpc.StatusCode.FAILED_PRECONDITION: ("this is broker 0", "shard count mismatch: "),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("larger than max",),
    grpc.StatusCode.ABORTED: (REPLACED,),
    # A well-formed edge id that the stream's key does not derive.
    grpc.StatusCode.PERMISSION_DENIED: ("the hello's edge id is not the one derived",),
}

FUZZ_EDGE = "ws.fuzz"  # every fuzzed stream sends this edge's key

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=130)
names = st.one_of(
    text,
    st.text(alphabet="abgmo019-_.", min_size=1, max_size=12),  # valid, owned or not
    st.text(alphabet="ab!.", max_size=8),
    st.integers(101, 4000).map(lambda n: "x" * n),
)
events = st.builds(
    broker_pb2.Event,
    type=text,
    kind=st.integers(-(2**31), 2**31 - 1),
    body=st.binary(max_size=200) | st.integers(0, 3 * MAX_MESSAGE // 4).map(lambda n: b"x" * n),
)
publishes = st.builds(
    broker_pb2.Publish,
    group=names,
    channel=st.just("") | names,
    event=events,
    trace=st.dictionaries(text, text, max_size=3),
    sent_at=st.floats(),
)
# Small enough to repeat ten thousand times within the message limit.
small_publishes = st.builds(
    broker_pb2.Publish,
    group=names.filter(lambda name: len(name) < 200),
    channel=st.just(""),
    event=st.builds(
        broker_pb2.Event, type=text, kind=st.integers(0, 5), body=st.binary(max_size=50)
    ),
)


@st.composite
def repeated(draw: st.DrawFn, element: st.SearchStrategy[str]) -> list[str]:
    """A short list, or one element repeated up to a hundred thousand times."""
    if draw(st.booleans()):
        return draw(st.lists(element, max_size=20))
    return [draw(element)] * draw(st.integers(0, 100_000))


def frame_fits(frame: broker_pb2.EdgeFrame | broker_pb2.PublishRequest) -> bool:
    return frame.ByteSize() < MAX_MESSAGE - 1024


edge_frames = st.builds(
    broker_pb2.EdgeFrame,
    subscribe=repeated(names),
    publish=st.lists(publishes, max_size=6),
    unsubscribe=repeated(names),
    sync=st.integers(0, 2**64 - 1),
).filter(frame_fits)

hellos = st.builds(
    broker_pb2.Hello,
    edge_id=st.one_of(
        st.just(wire.edge_id(FUZZ_EDGE)),
        st.text(alphabet="abc.-_0", min_size=1, max_size=20).map(lambda s: f"ws.{s}"),
        text,
    ),
    ordinal=st.just(0) | st.integers(0, 2**32 - 1),
    shards=st.sampled_from([0, SHARDS]) | st.integers(0, 2**32 - 1),
    topology_epoch=st.just(0) | st.integers(0, 2**64 - 1),
)
# A shard count the broker (ordinal 0 of SHARDS, topology epoch 0) refuses.
shard_counts = st.sampled_from([0, SHARDS]) | st.integers(0, 2**32 - 1)


def refused_shard_count(shards: int, topology_epoch: int) -> bool:
    """Whether the broker refuses a caller stating ``shards`` at ``topology_epoch``."""
    return shards not in (0, SHARDS) and topology_epoch == 0


def refused_count(refusals: list[broker_pb2.Refusal]) -> int:
    """How many operations the refusals stand for, checking each names a known rule."""
    count = 0
    for refusal in refusals:
        more = _MORE.fullmatch(refusal.reason)
        if more:
            count += int(more.group(1))
            continue
        assert refusal.reason.startswith(KNOWN_REASONS), refusal.reason
        assert len(refusal.group) <= 120 and len(refusal.channel) <= 120
        count += 1
    return count


def converse(
    attach: grpc.StreamStreamMultiCallable, first: object, frames: list[object], token: int
) -> tuple[list[broker_pb2.BrokerFrame], grpc.RpcError | None]:
    """Send the frames, then a barrier; read until it is answered or the stream fails.
    The stream stays open until then: ending it early would drop unread answers."""
    answered = threading.Event()

    def requests() -> Iterator[object]:
        yield first
        yield from frames
        yield broker_pb2.EdgeFrame(sync=token).SerializeToString()
        answered.wait(15)

    call = attach(requests(), timeout=15, metadata=wire.edge_metadata(FUZZ_EDGE))
    answers: list[broker_pb2.BrokerFrame] = []
    try:
        for answer in call:
            answers.append(answer)
            if answer.synced == token:
                return answers, None
    except grpc.RpcError as exc:
        return answers, exc
    finally:
        answered.set()
        call.cancel()
    raise AssertionError("the stream ended without an error and without the barrier")


def check_stream_error(error: grpc.RpcError) -> None:
    code, details = error.code(), error.details() or ""  # type: ignore[attr-defined]
    assert code in STREAM_ERRORS, (code, details)
    assert any(fragment in details for fragment in STREAM_ERRORS[code]), (code, details)
    assert len(details) < 1000


def final_checks(broker: Broker, channel: grpc.Channel, baseline: int, label: str) -> None:
    assert broker.alive()
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    wait_until(lambda: broker.stats().edges == 0, 10, "every fuzzed stream to be gone")
    grown = rss(broker.pid) - baseline
    print(f"\n{label}: broker RSS {baseline / MIB:.1f} MiB -> {(baseline + grown) / MIB:.1f} MiB")
    # Each example's frames are freed with it; what stays is allocator retention of
    # message buffers up to MAX_MESSAGE, far below this bound.
    assert grown < 150 * MIB


@pytest.mark.timeout(timeout_for(80, 0.5))
def test_fuzz_broker_attach_streams(stack: Stack) -> None:
    broker = stack.broker(None, *BROKER_ARGS)
    ring = ShardRing(SHARDS)
    with grpc.insecure_channel(broker.listen, options=wire.LARGE_MESSAGES) as channel:
        attach = channel.stream_stream(
            wire.ATTACH,
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=broker_pb2.BrokerFrame.FromString,
        )
        baseline = rss(broker.pid)
        tokens = iter(range(1, 10**9))

        @fuzz_settings(80)
        @given(hello=hellos, frames=st.lists(edge_frames, max_size=3))
        def structured(hello: broker_pb2.Hello, frames: list[broker_pb2.EdgeFrame]) -> None:
            token = next(tokens)
            first = broker_pb2.EdgeFrame(hello=hello)
            answers, error = converse(attach, first, list(frames), token)
            valid_hello = (
                hello.ordinal == 0
                and hello.edge_id == wire.edge_id(FUZZ_EDGE)
                and not refused_shard_count(hello.shards, hello.topology_epoch)
            )
            if error is not None:
                check_stream_error(error)
                assert not valid_hello or error.code() != grpc.StatusCode.INVALID_ARGUMENT
                return
            assert valid_hello and answers[0].HasField("welcome")
            assert answers[0].welcome.shards == SHARDS
            # Every refusable operation was refused with a known rule; the rest applied.
            refused = refused_count([r for a in answers for r in a.refusals])
            bad = 0
            for frame in frames:
                for group in frame.subscribe:
                    bad += (
                        not re.fullmatch(r"[A-Za-z0-9\-_.]{1,100}", group) or ring.owner(group) != 0
                    )
            assert refused >= bad

        structured()

        @fuzz_settings(80)
        @given(data=st.binary(max_size=300))
        def raw(data: bytes) -> None:
            answers, error = converse(attach, data, [], next(tokens))
            if error is not None:
                check_stream_error(error)
            else:  # the bytes happened to be an EdgeFrame with a proper hello
                assert answers[0].HasField("welcome")

        raw()
        final_checks(broker, channel, baseline, f"{2 * examples(80)} fuzzed Attach streams")


@pytest.mark.timeout(timeout_for(150, 0.3))
def test_fuzz_broker_unary_publish(stack: Stack) -> None:
    broker = stack.broker(None, *BROKER_ARGS)
    with grpc.insecure_channel(broker.listen, options=wire.LARGE_MESSAGES) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        raw_publish = channel.unary_unary(
            wire.PUBLISH,
            request_serializer=wire.identity,
            response_deserializer=broker_pb2.PublishReply.FromString,
        )
        baseline = rss(broker.pid)

        @fuzz_settings(150)
        @given(
            request=st.builds(
                broker_pb2.PublishRequest,
                publish=st.lists(publishes, max_size=8)
                | st.tuples(small_publishes, st.integers(0, 10_000)).map(
                    lambda pn: [pn[0]] * pn[1]
                ),
                shards=shard_counts,
                topology_epoch=st.just(0) | st.integers(0, 2**64 - 1),
            ).filter(frame_fits)
        )
        def structured(request: broker_pb2.PublishRequest) -> None:
            if refused_shard_count(request.shards, request.topology_epoch):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.Publish(request, timeout=15)
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
                assert "shard count mismatch: " in (refused.value.details() or "")  # type: ignore[attr-defined]
                return
            reply = stub.Publish(request, timeout=15)
            assert reply.accepted + refused_count(list(reply.refusals)) == len(request.publish)
            assert len(reply.refusals) <= 101

        structured()

        @fuzz_settings(150)
        @given(data=st.binary(max_size=300))
        def raw(data: bytes) -> None:
            try:
                reply = raw_publish(data, timeout=15)
            except grpc.RpcError as exc:
                # gRPC's own decoding fails before the broker's code runs; the details
                # name the message type. Or the bytes decoded to a request stating a
                # shard count the broker refuses.
                details = exc.details() or ""  # type: ignore[attr-defined]
                assert "django_ws.v1.PublishRequest" in details or (
                    exc.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
                    and "shard count mismatch: " in details
                ), details
                return
            assert len(reply.refusals) <= 101

        raw()
        # Still serving well-formed publishes.
        reply = stub.Publish(
            broker_pb2.PublishRequest(
                publish=[
                    broker_pb2.Publish(group="m", event=codec.encode_dict_event({"type": "x"}))
                ]
            ),
            timeout=5,
        )
        assert reply.accepted + len(reply.refusals) == 1
        final_checks(broker, channel, baseline, f"{2 * examples(150)} fuzzed publishes")
