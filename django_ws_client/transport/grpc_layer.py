"""The channel layer that plain Django processes use: unary publishes over gRPC.

Views, signals, tasks and management commands publish through it; inside the websocket
server the edge provides its own layer (streams, local membership) instead, and
:func:`~django_ws_client.transport.get_channel_layer` returns that one there.

While a broker is unreachable (a restart in a rolling upgrade), a publish waits for it
and is retried, up to ``publish_timeout`` seconds; each carries this process's
publisher id and a sequence number, so the broker applies a retried publish once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import grpc
from opentelemetry.trace import SpanKind

from django_ws_client.exceptions import BrokerRefused, BrokerUnavailable
from django_ws_client.tracing import inject_trace, span
from django_ws_client.transport.base import channel_of, exclude_list
from django_ws_client.transport.channels import SyncChannelPool
from django_ws_client.transport.config import TransportConfig, parse_config
from django_ws_client.transport.members import BrokerMembers
from django_ws_proto import codec
from django_ws_proto.names import require_group_name
from django_ws_proto.ring import ShardRing
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class GRPCTransportLayer(BrokerMembers):
    """Publishes to the broker that owns each group, reusing one connection per broker."""

    def __init__(self, config: TransportConfig | None = None, **config_kwargs: Any) -> None:
        super().__init__(config if config is not None else parse_config(config_kwargs))
        self.ring = ShardRing(self.config.shards)
        self._pool = SyncChannelPool(self.config)
        self.publisher = f"pub.{secrets.token_hex(8)}"
        self._seqs = itertools.count(1)
        self._waiting = 0

    def _stub(self, ordinal: int) -> broker_pb2_grpc.BrokerStub:
        return broker_pb2_grpc.BrokerStub(self._pool.get(self.config.address_for(ordinal)))

    async def _publish(self, ordinal: int, *publishes: broker_pb2.Publish) -> None:
        """Publish (one request however many), waiting for an unreachable broker up to
        ``publish_timeout``."""
        for publish in publishes:
            publish.seq = next(self._seqs)
        request = broker_pb2.PublishRequest(
            publish=publishes, shards=self.ring.shards, publisher=self.publisher
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.publish_timeout
        delay = 0.05
        waiting = False
        try:
            while True:
                try:
                    reply = await self._call(ordinal, request, deadline - loop.time())
                    break
                except BrokerUnavailable as exc:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise BrokerUnavailable(
                            f"{exc}; gave up after {self.config.publish_timeout:g}s "
                            "(publish_timeout)"
                        ) from None
                    if not waiting:
                        if self._waiting >= self.config.max_pending_publishes:
                            raise BrokerUnavailable(
                                f"{exc}; {self._waiting} publishes of this process already "
                                "wait for a broker (max_pending_publishes)"
                            ) from None
                        waiting = True
                        self._waiting += 1
                    await asyncio.sleep(min(delay, remaining))
                    delay = min(delay * 2, 1.0)
        finally:
            if waiting:
                self._waiting -= 1
        if reply.refusals:
            refusal = reply.refusals[0]
            raise BrokerRefused(f"broker {ordinal} refused: {refusal.reason}")

    async def _call(
        self, ordinal: int, request: broker_pb2.PublishRequest, timeout: float
    ) -> broker_pb2.PublishReply:
        # The trace context also rides in the call's metadata, for gRPC-aware tooling.
        metadata = tuple(request.publish[0].trace.items()) or None
        # Waiting for the channel to be ready is what makes a publish ride out a broker
        # restart instead of failing at once.
        future = self._stub(ordinal).Publish.future(
            request, timeout=max(0.01, timeout), metadata=metadata, wait_for_ready=True
        )
        loop = asyncio.get_running_loop()
        result: asyncio.Future[broker_pb2.PublishReply] = loop.create_future()

        def transfer(done: Any) -> None:
            def settle() -> None:
                if result.cancelled():
                    return
                try:
                    result.set_result(done.result())
                except grpc.RpcError as exc:
                    result.set_exception(self._error(ordinal, exc))

            loop.call_soon_threadsafe(settle)

        future.add_done_callback(transfer)
        try:
            return await result
        except asyncio.CancelledError:
            future.cancel()
            raise

    def _error(self, ordinal: int, exc: grpc.RpcError) -> Exception:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        address = self.config.address_for(ordinal)
        if code in _UNAVAILABLE:
            return BrokerUnavailable(
                f"broker {ordinal} at {address} is unavailable ({code.name if code else '?'}: "
                f"{details}); is the websocket server or broker running?"
            )
        return BrokerRefused(f"broker {ordinal} at {address} answered {code}: {details}")

    def _make_publish(
        self, *, group: str = "", channel: str = "", event: Any
    ) -> broker_pb2.Publish:
        publish = broker_pb2.Publish(
            group=group, channel=channel, event=self.encode_event(event), sent_at=time.time()
        )
        inject_trace(publish.trace)
        return publish

    async def group_send(self, group: str, message: Any, *, exclude: Any = None) -> None:
        require_group_name(group)
        with span("django_ws group_send", SpanKind.PRODUCER, group=group):
            publish = self._make_publish(group=group, event=message)
            publish.exclude.extend(exclude_list(exclude))
            await self._publish(self.ring.owner(group), publish)

    async def group_send_many(self, messages: Iterable[tuple[str, Any]]) -> None:
        """Many (group, event) pairs in one request per broker, sent concurrently."""
        by_owner: dict[int, list[broker_pb2.Publish]] = defaultdict(list)
        for group, message in messages:
            require_group_name(group)
            by_owner[self.ring.owner(group)].append(self._make_publish(group=group, event=message))
        with span("django_ws group_send_many", SpanKind.PRODUCER):
            await asyncio.gather(
                *(self._publish(ordinal, *publishes) for ordinal, publishes in by_owner.items())
            )

    async def _members(
        self, group: str, *, channels: bool = False, presence: bool = False
    ) -> broker_pb2.MembersReply:
        require_group_name(group)
        ordinal = self.ring.owner(group)
        request = broker_pb2.MembersRequest(
            group=group, shards=self.ring.shards, channels=channels, presence=presence
        )
        future = self._stub(ordinal).Members.future(
            request,
            timeout=self.config.timeout,
            wait_for_ready=True,
        )
        try:
            reply: broker_pb2.MembersReply = await asyncio.wrap_future(_as_future(future))
        except grpc.RpcError as exc:
            raise self._error(ordinal, exc) from None
        return reply

    async def send(self, channel: str, message: Any) -> None:
        channel = channel_of(channel)
        publish = self._make_publish(channel=channel, event=message)
        await self._publish(self.ring.channel_owner(channel), publish)

    async def _control(self, op: str, group: str, channel: Any) -> None:
        require_group_name(group)
        name = channel_of(channel)
        publish = broker_pb2.Publish(channel=name, event=codec.encode_control(op, group))
        await self._publish(self.ring.channel_owner(name), publish)

    async def group_add(self, group: str, channel: Any) -> None:
        """Ask the edge that holds ``channel`` to add it to ``group``."""
        await self._control("group_add", group, channel)

    async def group_discard(self, group: str, channel: Any) -> None:
        await self._control("group_discard", group, channel)

    async def close(self) -> None:
        self._pool.close()


def _as_future(call: Any) -> concurrent.futures.Future[Any]:
    """A gRPC future as a concurrent.futures one, for ``asyncio.wrap_future``."""
    result: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def transfer(done: Any) -> None:
        try:
            result.set_result(done.result())
        except Exception as exc:
            result.set_exception(exc)

    call.add_done_callback(transfer)
    return result
