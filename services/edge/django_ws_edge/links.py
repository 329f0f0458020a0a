"""The edge's streams to the brokers: one :class:`BrokerLink` per broker ordinal.

A link batches outgoing operations into frames, reconnects with backoff and jitter when
its broker goes away, and on every (re)connect subscribes again to all the groups the
worker still has members in for that broker, because membership lives at the edge. While
a link is down, a publish to a group it owns fails at once with ``BrokerUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from django_ws_client.exceptions import BrokerUnavailable
from django_ws_client.transport.channels import channel_credentials, channel_options
from django_ws_client.transport.config import TransportConfig
from django_ws_edge import metrics
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

logger = logging.getLogger("django_ws.edge.link")

MAX_PENDING_PUBLISHES = 10_000
"""Publishes waiting to be written to one broker before senders are made to wait."""

LINGER_SECONDS = 0.001
"""Under load, how long a link waits to gather more operations into one frame.

Every gRPC stream message costs tens of microseconds of Python on each side, more than
a publish itself; a stream that wrote less than ``BUSY_WINDOW_SECONDS`` ago is busy, so
it waits this long before writing again. An idle stream writes at once: a lone chat
message pays no added latency.
"""

BUSY_WINDOW_SECONDS = 0.005

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0


@dataclass
class LinkHandlers:
    """What a link calls back into: the worker's layer."""

    groups_owned: Callable[[int], list[str]]
    on_frame: Callable[[int, broker_pb2.BrokerFrame], None]
    on_state: Callable[[int, bool], None]


class _FrameBuilder:
    """Packs operations into frames without reordering them: the broker applies a
    frame's fields as subscribe, publish, unsubscribe, so an operation that would be
    applied out of order starts a new frame."""

    def __init__(self) -> None:
        self.frames: list[broker_pb2.EdgeFrame] = []
        self.publishes = 0

    def _frame_for(self, field_rank: int) -> broker_pb2.EdgeFrame:
        if self.frames:
            frame = self.frames[-1]
            if (field_rank < 2 and len(frame.unsubscribe)) or (
                field_rank < 1 and len(frame.publish)
            ):
                frame = broker_pb2.EdgeFrame()
                self.frames.append(frame)
            return frame
        frame = broker_pb2.EdgeFrame()
        self.frames.append(frame)
        return frame

    def subscribe(self, group: str) -> None:
        self._frame_for(0).subscribe.append(group)

    def publish(self, publish: broker_pb2.Publish) -> None:
        self._frame_for(1).publish.append(publish)
        self.publishes += 1

    def unsubscribe(self, group: str) -> None:
        self._frame_for(2).unsubscribe.append(group)

    def take(self) -> list[broker_pb2.EdgeFrame]:
        frames = [f for f in self.frames if f.ByteSize()]
        self.frames = []
        self.publishes = 0
        return frames


class BrokerLink:
    """One long-lived Attach stream to one broker."""

    def __init__(
        self,
        *,
        ordinal: int,
        address: str,
        shards: int,
        edge_id: str,
        config: TransportConfig,
        handlers: LinkHandlers,
    ) -> None:
        self.ordinal = ordinal
        self.address = address
        self.shards = shards
        self.edge_id = edge_id
        self.config = config
        self.handlers = handlers
        self.up = False
        self.started = False
        self.boot_id = ""
        self._builder = _FrameBuilder()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._closing = False
        self._next_sync = 0
        self._sync_waiters: dict[int, asyncio.Future[None]] = {}
        self._pending_barrier: tuple[int, asyncio.Future[None]] | None = None

    # Operations (called by the worker's layer) ---------------------------------------

    def subscribe(self, group: str) -> asyncio.Future[None] | None:
        """Subscribe to ``group``; returns a future done once the broker applied it
        (None while down: the reconnect subscribes to every owned group anyway)."""
        if not self.up:
            return None
        self._builder.subscribe(group)
        return self.barrier()

    def unsubscribe(self, group: str) -> None:
        if self.up:
            self._builder.unsubscribe(group)
            self._wake.set()

    async def publish(self, publish: broker_pb2.Publish) -> None:
        """Queue a publish; fails at once when the broker is down, waits when too
        many publishes are already waiting to be written."""
        if not self.up:
            raise BrokerUnavailable(
                f"broker {self.ordinal} at {self.address} is unavailable; the message to "
                f"{publish.group or publish.channel!r} was not sent"
            )
        if self._builder.publishes >= MAX_PENDING_PUBLISHES:
            self._room.clear()
            await self._room.wait()
            if not self.up:
                raise BrokerUnavailable(f"broker {self.ordinal} went away before the send")
        self._builder.publish(publish)
        self._wake.set()

    def barrier(self) -> asyncio.Future[None]:
        """A future done once the broker has applied everything queued so far.

        Operations queued in the same tick share one barrier, so a burst of joins costs
        one acknowledgement, not one each.
        """
        if not self.up:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(
                BrokerUnavailable(f"broker {self.ordinal} at {self.address} is unavailable")
            )
            return future
        if self._pending_barrier is None:
            self._next_sync += 1
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._sync_waiters[self._next_sync] = waiter
            self._pending_barrier = (self._next_sync, waiter)
            self._wake.set()
        return self._pending_barrier[1]

    async def sync(self, timeout: float = 5.0) -> None:
        """Wait until the broker has applied everything sent so far."""
        await asyncio.wait_for(asyncio.shield(self.barrier()), timeout)

    # Life ----------------------------------------------------------------------------

    def start(self) -> None:
        self.started = True
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"broker-link-{self.ordinal}"
        )

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel.close()

    def _make_channel(self) -> grpc.aio.Channel:
        credentials = channel_credentials(self.config)
        options = channel_options(self.config)
        if credentials is None:
            return grpc.aio.insecure_channel(self.address, options=options)
        return grpc.aio.secure_channel(self.address, credentials, options=options)

    async def _run(self) -> None:
        self._channel = self._make_channel()
        stub = broker_pb2_grpc.BrokerStub(self._channel)
        failures = 0
        while not self._closing:
            try:
                await self._session(stub)
                failures = 0
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (
                    grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ):
                    logger.error(
                        "broker %d at %s refused this edge: %s",
                        self.ordinal,
                        self.address,
                        exc.details(),
                    )
                elif failures == 0:
                    logger.warning(
                        "link to broker %d at %s lost: %s",
                        self.ordinal,
                        self.address,
                        exc.code().name,
                    )
            except Exception:
                logger.exception("link to broker %d at %s failed", self.ordinal, self.address)
            finally:
                self._set_down()
            failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(failures, 10))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _set_down(self) -> None:
        lost = self._builder.publishes
        self._builder.take()
        if lost:
            metrics.PUBLISH_LOST.inc(lost)
            logger.warning("%d publishes to broker %d were lost with its link", lost, self.ordinal)
        for waiter in self._sync_waiters.values():
            if not waiter.done():
                waiter.set_exception(BrokerUnavailable(f"broker {self.ordinal} went away"))
                waiter.exception()  # retrieved here: nobody may be waiting on it
        self._sync_waiters.clear()
        self._pending_barrier = None
        self._room.set()
        if self.up:
            self.up = False
            self.handlers.on_state(self.ordinal, False)

    async def _session(self, stub: broker_pb2_grpc.BrokerStub) -> None:
        call = stub.Attach(wait_for_ready=True)
        hello = broker_pb2.EdgeFrame(
            hello=broker_pb2.Hello(edge_id=self.edge_id, ordinal=self.ordinal, shards=self.shards),
            subscribe=self.handlers.groups_owned(self.ordinal),
        )
        await call.write(hello)
        first = await call.read()
        if first is grpc.aio.EOF or not first.HasField("welcome"):
            raise ConnectionError(f"broker {self.ordinal} did not welcome this edge")
        self.boot_id = first.welcome.boot_id
        metrics.LINK_CONNECTS.inc()
        # Groups joined between the hello and now were not in the hello: send them too.
        resubscribe = set(self.handlers.groups_owned(self.ordinal)) - set(hello.subscribe)
        self.up = True
        for group in resubscribe:
            self._builder.subscribe(group)
        logger.info(
            "link to broker %d at %s up (%d groups)",
            self.ordinal,
            self.address,
            len(hello.subscribe),
        )
        self.handlers.on_state(self.ordinal, True)
        self.handlers.on_frame(self.ordinal, first)
        reader = asyncio.get_running_loop().create_task(self._read(call))
        try:
            loop = asyncio.get_running_loop()
            last_write = 0.0
            while True:
                if not self._builder.frames and self._pending_barrier is None:
                    self._wake.clear()
                    waiter = asyncio.ensure_future(self._wake.wait())
                    done, _ = await asyncio.wait(
                        {waiter, reader}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if reader in done:
                        waiter.cancel()
                        reader.result()
                        return
                if loop.time() - last_write < BUSY_WINDOW_SECONDS:
                    await asyncio.sleep(LINGER_SECONDS)
                frames = self._builder.take()
                if self._pending_barrier is not None:
                    token, _ = self._pending_barrier
                    self._pending_barrier = None
                    if not frames:
                        frames.append(broker_pb2.EdgeFrame())
                    frames[-1].sync = token
                for frame in frames:
                    await call.write(frame)
                last_write = loop.time()
                self._room.set()
        finally:
            reader.cancel()
            call.cancel()

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            frame = await call.read()
            if frame is grpc.aio.EOF:
                raise ConnectionError(f"broker {self.ordinal} closed the stream")
            if frame.synced:
                waiter = self._sync_waiters.pop(frame.synced, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            self.handlers.on_frame(self.ordinal, frame)
