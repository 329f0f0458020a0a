"""The edge's streams to the brokers: one :class:`BrokerLink` per broker ordinal.

A link batches outgoing operations into frames, reconnects with backoff and jitter when
its broker goes away, and on every (re)connect subscribes again to all the groups the
worker still has members in for that broker, because membership lives at the edge,
asking the broker for what each group received since the last message the worker got.

Every publish is numbered and kept until the broker acknowledges it; after a reconnect
the unacknowledged ones are sent again (the broker drops any it had applied), so a
broker restart neither loses nor doubles what ``group_send`` accepted. While the broker
is unreachable, or too many publishes wait for its acknowledgement, a publish waits,
up to ``publish_timeout`` seconds, then fails with ``BrokerUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from django_ws_client.exceptions import BrokerRefused, BrokerUnavailable
from django_ws_client.transport.channels import (
    auth_metadata,
    channel_credentials,
    channel_options,
)
from django_ws_client.transport.config import TransportConfig
from django_ws_edge import metrics
from django_ws_proto.batching import linger_left
from django_ws_proto.grpc_channels import open_aio_channel
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

logger = logging.getLogger("django_ws.edge.link")


class AttachCall(Protocol):
    """What a link needs of its ``Attach`` stream: a gRPC call, or
    :class:`~django_ws_edge.broker_in_worker.LocalAttachCall` for the broker in this
    process."""

    async def write(self, frame: broker_pb2.EdgeFrame) -> None: ...

    async def read(self) -> Any: ...

    def cancel(self) -> bool: ...


AttachOpener = Callable[[tuple[tuple[str, str], ...]], AttachCall]
"""Opens an ``Attach`` stream with the given metadata (the link's own, gRPC, unless a
worker hosting the broker gives it another)."""

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0


@dataclass
class LinkHandlers:
    """What a link calls back into: the worker's layer."""

    # The subscriptions to send in the hello of a (re)connect: every group the worker
    # has members in for this broker, with the position it last got from each.
    resumes_owned: Callable[[int, frozenset[str]], list[broker_pb2.Resume]]
    # Every member the worker holds in the groups this broker owns, for the hello (the
    # broker rebuilds counts and presence from them).
    members_owned: Callable[[int], list[broker_pb2.Member]]
    on_frame: Callable[[int, broker_pb2.BrokerFrame], None]
    on_state: Callable[[int, bool], None]


# The broker applies a frame's fields in this order; an operation that would be applied
# before one already in the frame starts a new frame, so nothing is reordered.
_SUBSCRIBE, _RESUME, _MEMBERS, _PUBLISH, _UNSUBSCRIBE = range(5)

FRAME_MEMBERS = 10_000
"""Member reports packed into one frame (the hello included) at most: a worker holding
a hundred thousand members re-sends them after a reconnect in frames of about a
megabyte, never in one message over the broker's limit."""

FRAME_PUBLISH_BYTES = 4 * 1024 * 1024
"""Bytes of publishes packed into one frame at most (a quarter of the broker's default
message limit), so that thousands re-sent after a reconnect still fit."""


class _FrameBuilder:
    """Packs operations into frames without reordering them."""

    def __init__(self) -> None:
        self.frames: list[broker_pb2.EdgeFrame] = []
        self._rank = 0
        self._publish_bytes = 0
        self._members = 0
        # When the first operation of the frames not yet taken was queued (monotonic).
        self.first_queued = 0.0

    def _frame_for(self, rank: int) -> broker_pb2.EdgeFrame:
        if not self.frames:
            self.first_queued = time.monotonic()
        if not self.frames or rank < self._rank:
            self.frames.append(broker_pb2.EdgeFrame())
            self._publish_bytes = 0
            self._members = 0
        self._rank = rank
        return self.frames[-1]

    def subscribe(self, group: str) -> None:
        self._frame_for(_SUBSCRIBE).subscribe.append(group)

    def resume(self, resume: broker_pb2.Resume) -> None:
        self._frame_for(_RESUME).resume.append(resume)

    def member(self, member: broker_pb2.Member) -> None:
        if self._members >= FRAME_MEMBERS:
            self._rank = _UNSUBSCRIBE + 1  # full: the next operation starts a new frame
        self._frame_for(_MEMBERS).members.append(member)
        self._members += 1

    def publish(self, publish: broker_pb2.Publish, size: int) -> None:
        if self._publish_bytes + size > FRAME_PUBLISH_BYTES and self._publish_bytes:
            self._rank = _UNSUBSCRIBE + 1  # full: the next operation starts a new frame
        self._frame_for(_PUBLISH).publish.append(publish)
        self._publish_bytes += size

    def unsubscribe(self, group: str) -> None:
        self._frame_for(_UNSUBSCRIBE).unsubscribe.append(group)

    def take(self) -> list[broker_pb2.EdgeFrame]:
        frames = [f for f in self.frames if f.ByteSize()]
        self.frames = []
        self._rank = 0
        self._publish_bytes = 0
        self._members = 0
        return frames


class BrokerLink:
    """One long-lived Attach stream to one broker."""

    def __init__(
        self,
        *,
        ordinal: int,
        address: str,
        shards: int,
        topology_epoch: int = 0,
        edge_id: str,
        edge_key: str,
        config: TransportConfig,
        handlers: LinkHandlers,
    ) -> None:
        self.ordinal = ordinal
        self.address = address
        self.shards = shards
        # The topology epoch ``shards`` comes from, stated in the hello: a broker refuses
        # a different count only at the same epoch (0: this worker's configuration).
        self.topology_epoch = topology_epoch
        self.edge_id = edge_id
        self.edge_key = edge_key
        self.config = config
        self.handlers = handlers
        self.up = False
        self.started = False
        self.boot_id = ""
        self._builder = _FrameBuilder()
        self._wake = asyncio.Event()
        # Set whenever a waiting publish may go ahead: the link came up, or the broker
        # acknowledged publishes.
        self._changed = asyncio.Event()
        # (seq, publish, size) of every publish not yet acknowledged, oldest first.
        self._seq = 0
        self._retained: deque[tuple[int, broker_pb2.Publish, int]] = deque()
        self._retained_bytes = 0
        # Highest seq the broker acknowledged, and who waits for an acknowledgement
        # (seq order): layers whose sends return only once the broker has them.
        self._acked_through = 0
        self._ack_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        # Resume requests whose answer a member waits for: sent again after a reconnect.
        self._resumes: dict[int, broker_pb2.Resume] = {}
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._closing = False
        self._next_sync = 0
        self._sync_waiters: dict[int, asyncio.Future[None]] = {}
        self._pending_barrier: tuple[int, asyncio.Future[None]] | None = None
        # Set by a worker that hosts this broker itself (broker_in_worker).
        self.open_attach: AttachOpener | None = None

    # Operations (called by the worker's layer) ---------------------------------------

    def resume(self, resume: broker_pb2.Resume, *, retry: bool = True) -> None:
        """Subscribe to a group and ask for what it received after a position (epoch
        0: none). With ``retry`` the request is sent again after a reconnect until it
        is answered (someone waits for it); without, the reconnect's own resume of every
        owned group stands in for it."""
        if retry:
            self._resumes[resume.request] = resume
        if self.up:
            self._builder.resume(resume)
            self._wake.set()

    def answered(self, request: int) -> None:
        """The broker answered a Resume request: no need to send it again."""
        self._resumes.pop(request, None)

    def subscribe(self, group: str) -> None:
        """Subscribe to ``group`` with no answer awaited (the broker's refusal, if
        any, is logged)."""
        if self.up:
            self._builder.subscribe(group)
            self._wake.set()

    def member(self, member: broker_pb2.Member) -> bool:
        """Report a member joining or leaving; False when the link is down (the
        member then goes in the next hello)."""
        if not self.up:
            return False
        self._builder.member(member)
        self._wake.set()
        return True

    async def members(self, request: broker_pb2.MembersRequest) -> broker_pb2.MembersReply:
        """Ask the broker (the group's owner) who is in a group."""
        if self._channel is None:
            raise BrokerUnavailable(f"broker {self.ordinal} at {self.address} is not linked yet")
        stub = broker_pb2_grpc.BrokerStub(self._channel)
        request.shards = self.shards
        try:
            reply: broker_pb2.MembersReply = await stub.Members(
                request,
                timeout=self.config.timeout,
                metadata=auth_metadata(self.config),
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise BrokerUnavailable(
                    f"broker {self.ordinal} at {self.address} did not answer: {exc.details()}"
                ) from None
            raise BrokerRefused(
                f"broker {self.ordinal} at {self.address} answered {exc.code().name}: "
                f"{exc.details()}"
            ) from None
        return reply

    def unsubscribe(self, group: str) -> None:
        if self.up:
            self._builder.unsubscribe(group)
            self._wake.set()

    async def publish(self, publish: broker_pb2.Publish) -> None:
        """Queue a publish, keeping it until the broker acknowledges it.

        Waits while the broker is unreachable or too many publishes (count or bytes)
        wait for its acknowledgement, up to ``publish_timeout``; then raises
        ``BrokerUnavailable`` and the publish is not sent.
        """
        size = publish.ByteSize()
        config = self.config
        if not (
            self.up
            and len(self._retained) < config.max_pending_publishes
            and (not self._retained or self._retained_bytes + size <= config.max_pending_bytes)
        ):
            await self._wait_for_room(publish, size)
        self._seq += 1
        publish.seq = self._seq
        self._retained.append((self._seq, publish, size))
        self._retained_bytes += size
        self._builder.publish(publish, size)
        self._wake.set()

    async def _wait_for_room(self, publish: broker_pb2.Publish, size: int) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.publish_timeout
        while True:
            if not self.up:
                why = f"broker {self.ordinal} at {self.address} is unreachable"
            elif len(self._retained) >= config.max_pending_publishes:
                why = (
                    f"{len(self._retained)} publishes wait for broker {self.ordinal}'s "
                    "acknowledgement (max_pending_publishes)"
                )
            elif self._retained and self._retained_bytes + size > config.max_pending_bytes:
                why = (
                    f"{self._retained_bytes} bytes of publishes wait for broker "
                    f"{self.ordinal}'s acknowledgement (max_pending_bytes)"
                )
            else:
                return
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                raise BrokerUnavailable(
                    f"{why} for {config.publish_timeout:g}s (publish_timeout); the message "
                    f"to {publish.group or publish.channel!r} was not sent"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def _acknowledged(self, acked: int) -> None:
        self._acked_through = max(self._acked_through, acked)
        waiters = self._ack_waiters
        while waiters and waiters[0][0] <= acked:
            waiter = waiters.popleft()[1]
            if not waiter.done():
                waiter.set_result(None)
        retained = self._retained
        if not retained or retained[0][0] > acked:
            return
        while retained and retained[0][0] <= acked:
            self._retained_bytes -= retained.popleft()[2]
        self._changed.set()

    def acknowledged(self, seq: int) -> asyncio.Future[None]:
        """A future done once the broker has acknowledged the publish numbered ``seq``
        (what :meth:`publish` gave it): it is applied, and never sent again."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        retained = self._retained
        if seq <= self._acked_through or not retained or seq < retained[0][0]:
            future.set_result(None)  # acknowledged, or handed to another broker
        else:
            self._ack_waiters.append((seq, future))
        return future

    def withdraw(self, seq: int) -> bool:
        """Take back an unacknowledged publish (its sender gave up waiting): it is not
        sent again. False when it was acknowledged meanwhile."""
        for entry in self._retained:
            if entry[0] == seq:
                self._retained.remove(entry)
                self._retained_bytes -= entry[2]
                self._changed.set()
                return True
        return False

    def _release_ack_waiters(self, error: BaseException | None) -> None:
        """Nobody is owed an acknowledgement from this link any more: the publishes
        went to other brokers (None), or the link closed (``error``)."""
        while self._ack_waiters:
            waiter = self._ack_waiters.popleft()[1]
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
                waiter.exception()  # retrieved here: its sender may be gone

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
        # Opened here rather than in the task, so that a Members call made right after
        # start (a process's first group_size) waits for the broker instead of failing.
        self._channel = open_aio_channel(
            self.address, channel_credentials(self.config), channel_options(self.config)
        )
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"broker-link-{self.ordinal}"
        )

    async def close(self) -> None:
        """Close the link. Publishes the broker has not acknowledged yet are waited for
        first while the link is up (for at most the transport's ``timeout``): they are
        on their way, and a sender awaiting one would otherwise get BrokerUnavailable
        and the publish be counted lost though the broker has it."""
        if self.up and self._retained and not self._closing:
            last = self._retained[-1][0]
            with contextlib.suppress(TimeoutError, BrokerUnavailable):
                await asyncio.wait_for(self.acknowledged(last), self.config.timeout)
        self._closing = True
        self._changed.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel.close()
        self._release_ack_waiters(
            BrokerUnavailable(f"the link to broker {self.ordinal} closed before it acknowledged")
        )
        if self._retained:
            metrics.PUBLISH_LOST.inc(len(self._retained))
            logger.warning(
                "%d publishes to broker %d were never acknowledged before this worker stopped",
                len(self._retained),
                self.ordinal,
            )
            self._retained.clear()
            self._retained_bytes = 0

    def take_retained(self) -> list[broker_pb2.Publish]:
        """Hand over the unacknowledged publishes (this broker is leaving the cluster:
        they go to the groups' new owners)."""
        publishes = [publish for _seq, publish, _size in self._retained]
        self._retained.clear()
        self._retained_bytes = 0
        self._release_ack_waiters(None)
        return publishes

    async def _run(self) -> None:
        assert self._channel is not None
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
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
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
        # Unsent frames go; the publishes in them stay retained and are sent again.
        self._builder.take()
        for waiter in self._sync_waiters.values():
            if not waiter.done():
                waiter.set_exception(BrokerUnavailable(f"broker {self.ordinal} went away"))
                waiter.exception()  # retrieved here: nobody may be waiting on it
        self._sync_waiters.clear()
        self._pending_barrier = None
        self._changed.set()
        if self.up:
            self.up = False
            self.handlers.on_state(self.ordinal, False)

    async def _session(self, stub: broker_pb2_grpc.BrokerStub) -> None:
        metadata = auth_metadata(self.config, edge_key=self.edge_key)
        call: AttachCall = (
            stub.Attach(wait_for_ready=True, metadata=metadata)
            if self.open_attach is None
            else self.open_attach(metadata)
        )
        resumes = self.handlers.resumes_owned(self.ordinal, frozenset())
        members = self.handlers.members_owned(self.ordinal)
        hello = broker_pb2.EdgeFrame(
            hello=broker_pb2.Hello(
                edge_id=self.edge_id,
                ordinal=self.ordinal,
                shards=self.shards,
                topology_epoch=self.topology_epoch,
            ),
            resume=resumes,
            members=members[:FRAME_MEMBERS],
        )
        await call.write(hello)
        first = await call.read()
        if first is grpc.aio.EOF or not first.HasField("welcome"):
            raise ConnectionError(f"broker {self.ordinal} did not welcome this edge")
        self.boot_id = first.welcome.boot_id
        metrics.LINK_CONNECTS.inc()
        self.up = True
        # Groups joined between the hello and now were not in the hello: send them too.
        in_hello = frozenset(resume.group for resume in resumes)
        for resume in self.handlers.resumes_owned(self.ordinal, in_hello):
            self._builder.resume(resume)
        # Members past what the hello carries, then those who joined or left meanwhile.
        for member in members[FRAME_MEMBERS:]:
            self._builder.member(member)
        was = {(member.group, member.channel) for member in members}
        now = self.handlers.members_owned(self.ordinal)
        for member in now:
            if (member.group, member.channel) not in was:
                self._builder.member(member)
        for key in was - {(member.group, member.channel) for member in now}:
            self._builder.member(broker_pb2.Member(group=key[0], channel=key[1], left=True))
        # Requests someone waits for, then every publish not acknowledged, in order.
        for resume in self._resumes.values():
            self._builder.resume(resume)
        if self._retained:
            metrics.PUBLISH_RETRIED.inc(len(self._retained))
            for _seq, publish, size in self._retained:
                self._builder.publish(publish, size)
        self._changed.set()
        logger.info(
            "link to broker %d at %s up (%d groups, %d publishes sent again)",
            self.ordinal,
            self.address,
            len(resumes),
            len(self._retained),
        )
        self.handlers.on_state(self.ordinal, True)
        self.handlers.on_frame(self.ordinal, first)
        reader = asyncio.get_running_loop().create_task(self._read(call))
        # The reader's end wakes the writer too: one event to wait on, where waiting on
        # both would cost a task and a wait set for every frame written.
        reader.add_done_callback(lambda _reader: self._wake.set())
        try:
            last_write = 0.0
            while True:
                if not self._builder.frames and self._pending_barrier is None:
                    self._wake.clear()
                    if not reader.done():  # else its wake-up was just cleared
                        await self._wake.wait()
                if reader.done():
                    reader.result()  # the stream's error, if it ended with one
                    return
                # A link to the broker in this process costs nothing per frame: no linger.
                if self._builder.frames and self.open_attach is None:
                    wait = linger_left(time.monotonic(), self._builder.first_queued, last_write)
                    if wait > 0:
                        await asyncio.sleep(wait)
                frames = self._builder.take()
                if self._pending_barrier is not None:
                    token, _ = self._pending_barrier
                    self._pending_barrier = None
                    if not frames:
                        frames.append(broker_pb2.EdgeFrame())
                    frames[-1].sync = token
                for frame in frames:
                    await call.write(frame)
                last_write = time.monotonic()
        finally:
            reader.cancel()
            call.cancel()

    async def _read(self, call: AttachCall) -> None:
        while True:
            frame = await call.read()
            if frame is grpc.aio.EOF:
                raise ConnectionError(f"broker {self.ordinal} closed the stream")
            if frame.acked:
                self._acknowledged(frame.acked)
            if frame.synced:
                waiter = self._sync_waiters.pop(frame.synced, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            self.handlers.on_frame(self.ordinal, frame)
