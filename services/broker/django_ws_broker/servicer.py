"""The gRPC face of the broker: a thin adapter between streams and :class:`ShardState`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.trace import SpanKind

from django_ws_broker.auth import attach_identity_refusal
from django_ws_broker.metrics import PUBLISH_SECONDS
from django_ws_broker.shard import REPLACED, EdgeStream, ShardState, edge_id_error
from django_ws_proto import tracing as wire_tracing
from django_ws_proto.batching import linger_left
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

logger = logging.getLogger("django_ws.broker")

MAX_BATCH = 512
"""Deliveries packed into one BrokerFrame at most; batching is what makes fan-out cheap."""

DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024
"""Bytes of deliveries packed into one BrokerFrame at most (one larger delivery goes
alone): half the default gRPC message limit, so a batch never makes a frame too big."""

DEFAULT_HELLO_TIMEOUT = 10.0
"""Seconds an Attach stream may take to send its hello before it is ended."""

MAX_REFUSALS_LISTED = 100
"""Refusals listed one by one in an answer; the rest are summed up in one more refusal,
so a frame of a million refusable operations cannot make a reply of a hundred megabytes."""

MAX_MEMBER_REFUSALS_LISTED = 10_000
"""Refused members (a member limit) listed in one answer beyond the first refusals, so
that their edge takes them back; past it they are summed up like the rest."""

# Names echoed back in a refusal are cut to this length (a valid name is at most 100
# characters; the reason names the rule and shows the start of a longer one).
_ECHOED_NAME_LENGTH = 120


class _Refusals:
    """The refusals of one frame or request: the first few listed, the rest counted."""

    def __init__(self) -> None:
        self.listed: list[broker_pb2.Refusal] = []
        self.count = 0
        self.members_listed = 0

    def add(self, reason: str, *, group: str = "", channel: str = "", member: bool = False) -> None:
        self.count += 1
        listed = self.count <= MAX_REFUSALS_LISTED
        if member and not listed and self.members_listed < MAX_MEMBER_REFUSALS_LISTED:
            # Refused members are listed further: the edge takes each back (a group_add
            # raises), and a legitimate frame reports few.
            self.members_listed += 1
            listed = True
        if listed:
            self.listed.append(
                broker_pb2.Refusal(
                    group=group[:_ECHOED_NAME_LENGTH],
                    channel=channel[:_ECHOED_NAME_LENGTH],
                    reason=reason,
                    member=member,
                )
            )

    def summary(self) -> list[broker_pb2.Refusal]:
        if self.count <= len(self.listed):
            return self.listed
        more = broker_pb2.Refusal(
            reason=f"{self.count - len(self.listed)} more operations were refused "
            f"(only the first {MAX_REFUSALS_LISTED} refusals are listed)"
        )
        return [*self.listed, more]


class BrokerServicer(broker_pb2_grpc.BrokerServicer):
    """Serves Attach streams from edges and unary publishes from other processes."""

    def __init__(
        self,
        shard: ShardState,
        *,
        tracing: bool = False,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        self.shard = shard
        self.tracing = tracing
        self.hello_timeout = hello_timeout
        self.max_batch_bytes = max_batch_bytes
        self.boot_id = uuid.uuid4().hex
        # The task serving each attached stream, so a stream replaced by a newer one
        # with the same edge id can be ended at once.
        self._streams: dict[EdgeStream, asyncio.Task[Any]] = {}
        self.draining = False

    def _welcome(self) -> broker_pb2.BrokerFrame:
        return broker_pb2.BrokerFrame(
            welcome=broker_pb2.Welcome(
                ordinal=self.shard.ordinal,
                shards=self.shard.shards,
                boot_id=self.boot_id,
                topology_epoch=self.shard.topology_epoch,
            )
        )

    async def Attach(
        self,
        request_iterator: AsyncIterator[broker_pb2.EdgeFrame],
        context: grpc.aio.ServicerContext,
    ) -> None:
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "broker is draining")
        iterator = request_iterator.__aiter__()
        try:
            first = await asyncio.wait_for(iterator.__anext__(), self.hello_timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no hello within {self.hello_timeout:g}s: the first frame of Attach must "
                "carry hello",
            )
        except DecodeError as exc:
            await self._abort_undecodable(context, exc)
        if not first.HasField("hello"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first frame of Attach must carry hello"
            )
        hello = first.hello
        error = edge_id_error(hello.edge_id)
        if error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad hello: {error}")
        refusal = attach_identity_refusal(context.invocation_metadata(), hello.edge_id)
        if refusal:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        if hello.ordinal != self.shard.ordinal:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this is broker {self.shard.ordinal}, the edge expected broker "
                f"{hello.ordinal}: check the broker addresses in the edge's settings",
            )
        mismatch = self.shard.shard_count_error(hello.shards, hello.topology_epoch)
        if mismatch:
            logger.warning("edge %s refused: %s", hello.edge_id, mismatch)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, mismatch)
        previous = self.shard.edges.get(hello.edge_id)
        edge = self.shard.attach(hello.edge_id)
        if previous is not None:
            replaced = self._streams.pop(previous, None)
            if replaced is not None:
                replaced.cancel()
        task = asyncio.current_task()
        assert task is not None
        self._streams[edge] = task
        logger.info("edge %s attached", hello.edge_id)
        writer: asyncio.Task[None] | None = None
        try:
            # Apply the hello's subscriptions before welcoming: once the edge sees the
            # welcome its groups are in place, so nothing published after it is missed.
            self._apply(edge, first)
            await context.write(self._welcome())
            writer = asyncio.create_task(self._write_loop(edge, context))
            async for frame in iterator:
                self._apply(edge, frame)
                if writer.done():
                    break
        except asyncio.CancelledError:
            # A cancelled handler that returns ends its call with the status set here.
            if edge.closed:
                # Replaced by a newer stream: end this one with a status that says so.
                context.set_code(grpc.StatusCode.ABORTED)
                context.set_details(REPLACED)
            elif self.draining:
                context.set_code(grpc.StatusCode.UNAVAILABLE)
                context.set_details("broker is stopping")
        except grpc.aio.AioRpcError:
            pass
        except DecodeError as exc:
            await self._abort_undecodable(context, exc)
        finally:
            if writer is not None:
                writer.cancel()
            if self._streams.get(edge) is task:
                del self._streams[edge]
            self.shard.detach(edge)
            logger.info("edge %s detached", hello.edge_id)

    async def _abort_undecodable(self, context: grpc.aio.ServicerContext, exc: DecodeError) -> None:
        logger.warning("Attach stream ended: a frame is not an EdgeFrame (%s)", exc)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"a frame of this Attach stream is not a valid django_ws.v1.EdgeFrame: {exc}",
        )

    def _apply(self, edge: EdgeStream, frame: broker_pb2.EdgeFrame) -> None:
        if self.draining:
            # Nothing more is applied (nor acknowledged) once the broker is stopping:
            # the edge keeps those publishes and re-sends them to the next broker.
            return
        shard = self.shard
        refusals = _Refusals()
        for group in frame.subscribe:
            reason = shard.subscribe(edge, group)
            if reason is not None:
                refusals.add(reason, group=group)
        recovered = [shard.resume(edge, resume) for resume in frame.resume]
        for member in frame.members:
            reason, own = shard.member(edge, member)
            if reason is not None:
                refusals.add(reason, group=member.group, channel=member.channel, member=own)
        acked = edge.acked
        edge_id = edge.edge_id
        if frame.publish:
            started = time.perf_counter()
            for publish in frame.publish:
                seq = publish.seq
                if seq:
                    if not shard.accept_seq(edge_id, seq, stream=True):
                        continue
                    acked = seq
                reason = self._publish(publish)
                if reason is not None:
                    refusals.add(reason, group=publish.group, channel=publish.channel)
            PUBLISH_SECONDS.observe(time.perf_counter() - started)
        for group in frame.unsubscribe:
            shard.unsubscribe(edge, group)
        if refusals.count or frame.sync or recovered:
            shard.offer_control(
                edge,
                broker_pb2.BrokerFrame(
                    refusals=refusals.summary(), synced=frame.sync, recovered=recovered
                ),
            )
        elif acked != edge.acked and edge.queue.empty():
            # Nothing queued would carry the acknowledgement soon: wake the writer.
            shard.offer_control(edge, broker_pb2.BrokerFrame())
        edge.acked = acked

    def _publish(self, publish: broker_pb2.Publish) -> str | None:
        if not (self.tracing and publish.trace):
            return self.shard.publish(publish)
        with wire_tracing.tracer().start_as_current_span(
            "django_ws broker.publish",
            context=wire_tracing.extract(publish.trace),
            kind=SpanKind.CONSUMER,
            attributes=wire_tracing.span_attributes(
                group=publish.group or None,
                channel=publish.channel or None,
                ordinal=self.shard.ordinal,
                edges=len(self.shard.groups.get(publish.group, ())) if publish.group else None,
            ),
        ) as span:
            # The deliveries carry the broker's span as their parent.
            wire_tracing.inject(publish.trace)
            reason = self.shard.publish(publish)
            if reason:
                span.set_attribute("django_ws.refused", reason)
            return reason

    async def _write_loop(self, edge: EdgeStream, context: grpc.aio.ServicerContext) -> None:
        queue = edge.queue
        max_bytes = self.max_batch_bytes
        # A stream of this process (the broker in an edge worker) has no gRPC message
        # cost to spread, so it does not linger.
        lingers = getattr(context, "linger", True)
        last_write = 0.0
        while True:
            item, size = await edge.take()
            # A busy stream gathers a little more into each frame (see linger_left),
            # no longer than it takes to gather a full one.
            wait = linger_left(time.monotonic(), edge.first_queued, last_write) if lingers else 0
            if wait > 0:
                await edge.gather(wait, MAX_BATCH, max_bytes)
            frame = broker_pb2.BrokerFrame()
            deliveries: list[broker_pb2.Delivery] = []
            batch_bytes = 0
            while True:
                if isinstance(item, broker_pb2.Delivery):
                    deliveries.append(item)
                    batch_bytes += size
                    if (
                        len(deliveries) >= MAX_BATCH
                        or queue.empty()
                        or batch_bytes + edge.next_size() > max_bytes
                    ):
                        break
                    item, size = edge.take_nowait()
                else:
                    # A control frame ends the batch so that it keeps its place in order.
                    frame.deliveries.extend(deliveries)
                    deliveries = []
                    frame.MergeFrom(item)
                    break
            if deliveries:
                frame.deliveries.extend(deliveries)
            frame.dropped = edge.take_dropped()
            frame.acked = edge.acked
            await context.write(frame)
            last_write = time.monotonic()

    async def Publish(
        self, request: broker_pb2.PublishRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.PublishReply:
        if self.draining:
            # Not applied: the caller retries, and finds the broker that comes next.
            await context.abort(grpc.StatusCode.UNAVAILABLE, "broker is draining")
        self.shard.counters.publish_requests += 1
        mismatch = self.shard.shard_count_error(request.shards, request.topology_epoch)
        if mismatch:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, mismatch)
        refusals = _Refusals()
        accepted = 0
        publisher = request.publisher
        started = time.perf_counter()
        for publish in request.publish:
            if (
                publisher
                and publish.seq
                and not self.shard.accept_seq(publisher, publish.seq, stream=False)
            ):
                accepted += 1  # applied before: the retry is answered as the first was
                continue
            reason = self._publish(publish)
            if reason is None:
                accepted += 1
            else:
                refusals.add(reason, group=publish.group, channel=publish.channel)
        PUBLISH_SECONDS.observe(time.perf_counter() - started)
        return broker_pb2.PublishReply(accepted=accepted, refusals=refusals.summary())

    async def flush(self, timeout: float) -> bool:
        """Wait until every edge stream's queue is written out, at most ``timeout``
        seconds; False when some were not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(not edge.queue.empty() for edge in self._streams):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def end_streams(self) -> None:
        """End every Attach stream now (the broker is stopping): edges reconnect to
        the next broker and catch up from where their streams ended."""
        for task in self._streams.values():
            task.cancel()

    async def Stats(
        self, request: broker_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.StatsReply:
        shard = self.shard
        reply = broker_pb2.StatsReply(
            ordinal=shard.ordinal,
            shards=shard.shards,
            edges=len(shard.edges),
            groups=len(shard.groups),
            subscriptions=shard.subscription_count(),
            published=shard.counters.published,
            delivered=shard.counters.delivered,
            dropped=shard.counters.dropped_queue_full,
            edge_ids=sorted(shard.edges),
            boot_id=self.boot_id,
            publish_requests=shard.counters.publish_requests,
            members=shard.membership.count,
        )
        if request.include_groups:
            for group, subscribers in shard.groups.items():
                reply.group_edges[group] = len(subscribers)
        return reply

    async def Reshard(
        self, request: broker_pb2.ReshardRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ReshardReply:
        try:
            released = self.shard.reshard(request.shards, request.topology_epoch)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        logger.info(
            "resharded to %d shards (epoch %d): released %d groups",
            request.shards,
            request.topology_epoch,
            released,
        )
        # Tell every attached edge, so they move subscriptions to the new owners.
        welcome = self._welcome()
        for edge in list(self._streams):
            self.shard.offer_control(edge, welcome)
        return broker_pb2.ReshardReply(shards=self.shard.shards, released_groups=released)

    async def Members(
        self, request: broker_pb2.MembersRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.MembersReply:
        if request.shards and request.shards != self.shard.shards:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the caller expects {request.shards} shards, this broker has "
                f"{self.shard.shards}: check the shard count in the settings",
            )
        reason = self.shard.check_group(request.group)
        if reason is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, reason)
        return self.shard.membership.answer(request)
