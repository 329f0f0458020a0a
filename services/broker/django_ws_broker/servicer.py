"""The gRPC face of the broker: a thin adapter between streams and :class:`ShardState`."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import grpc
from opentelemetry.trace import SpanKind

from django_ws_broker.shard import EdgeStream, ShardState
from django_ws_proto import tracing as wire_tracing
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

logger = logging.getLogger("django_ws.broker")

MAX_BATCH = 512
"""Deliveries packed into one BrokerFrame at most; batching is what makes fan-out cheap."""


class BrokerServicer(broker_pb2_grpc.BrokerServicer):
    """Serves Attach streams from edges and unary publishes from other processes."""

    def __init__(self, shard: ShardState, *, tracing: bool = False) -> None:
        self.shard = shard
        self.tracing = tracing
        self.boot_id = uuid.uuid4().hex
        self._streams: dict[EdgeStream, grpc.aio.ServicerContext] = {}
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
            first = await iterator.__anext__()
        except StopAsyncIteration:
            return
        hello = first.hello
        if not hello.edge_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first frame of Attach must carry hello"
            )
        if hello.ordinal != self.shard.ordinal:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this is broker {self.shard.ordinal}, the edge expected broker "
                f"{hello.ordinal}: check the broker addresses in the edge's settings",
            )
        edge = self.shard.attach(hello.edge_id)
        self._streams[edge] = context
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
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        finally:
            if writer is not None:
                writer.cancel()
            self._streams.pop(edge, None)
            self.shard.detach(edge)
            logger.info("edge %s detached", hello.edge_id)

    def _apply(self, edge: EdgeStream, frame: broker_pb2.EdgeFrame) -> None:
        shard = self.shard
        refusals: list[broker_pb2.Refusal] = []
        for group in frame.subscribe:
            reason = shard.subscribe(edge, group)
            if reason is not None:
                refusals.append(broker_pb2.Refusal(group=group, reason=reason))
        for publish in frame.publish:
            reason = self._publish(publish)
            if reason is not None:
                refusals.append(
                    broker_pb2.Refusal(group=publish.group, channel=publish.channel, reason=reason)
                )
        for group in frame.unsubscribe:
            shard.unsubscribe(edge, group)
        if refusals or frame.sync:
            edge.offer_control(broker_pb2.BrokerFrame(refusals=refusals, synced=frame.sync))

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
        while True:
            item = await queue.get()
            frame = broker_pb2.BrokerFrame()
            deliveries: list[broker_pb2.Delivery] = []
            while True:
                if isinstance(item, broker_pb2.Delivery):
                    deliveries.append(item)
                    if len(deliveries) >= MAX_BATCH or queue.empty():
                        break
                    item = queue.get_nowait()
                else:
                    # A control frame ends the batch so that it keeps its place in order.
                    frame.deliveries.extend(deliveries)
                    deliveries = []
                    frame.MergeFrom(item)
                    break
            if deliveries:
                frame.deliveries.extend(deliveries)
            frame.dropped = edge.take_dropped()
            await context.write(frame)

    async def Publish(
        self, request: broker_pb2.PublishRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.PublishReply:
        reply = broker_pb2.PublishReply()
        accepted = 0
        for publish in request.publish:
            reason = self._publish(publish)
            if reason is None:
                accepted += 1
            else:
                reply.refusals.append(
                    broker_pb2.Refusal(group=publish.group, channel=publish.channel, reason=reason)
                )
        reply.accepted = accepted
        return reply

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
            edge.offer_control(welcome)
        return broker_pb2.ReshardReply(shards=self.shard.shards, released_groups=released)
