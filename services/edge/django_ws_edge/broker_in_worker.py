"""The embedded broker inside the worker, for ``-w 1``: a group send is a function call.

With one worker and the embedded broker, every group message still went to another
process and back: the worker serialized a frame, gRPC carried it over the unix socket,
the broker parsed it, fanned out, serialized the deliveries and the worker parsed them
again, with grpc's poller threads and a process switch on each side. With
``WEBSOCKET_SERVER['BROKER_IN_WORKER'] = True`` the worker runs the broker itself:

- the broker still listens on the embedded unix socket, so plain Django processes
  (views, management commands, Channels apps on ``GRPCChannelLayer``) publish and
  attach as before, through gRPC;
- the worker's own link skips gRPC: :class:`LocalAttachCall` hands its frames to the
  broker's unchanged ``Attach`` handler through two bounded queues, as protobuf
  objects, and reads the broker's frames back the same way. Every rule of the stream
  (hello, welcome, acknowledgements, sync barriers, refusals, bounded queues and
  counted drops) is the servicer's own; nothing is serialized.

What it costs: the broker's groups, history and presence live as long as the worker.
A worker replaced after a crash or a wedge starts a new broker, so members who come
back get a ``group.gap`` ("history_lost") instead of the messages they missed, as
after a broker restart; a separate broker process keeps that history across a worker
replacement. That is why the setting is off by default.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from django_ws_broker.server import Broker, BrokerOptions
from django_ws_broker.servicer import BrokerServicer
from django_ws_client.transport.config import TransportConfig
from django_ws_client.transport.private_socket import check_broker_socket
from django_ws_edge.embedded import embedded_broker_settings
from django_ws_edge.links import BrokerLink
from django_ws_proto.v1 import broker_pb2

IN_FLIGHT_FRAMES = 8
"""Frames in flight each way before the writer waits, as gRPC's flow control makes a
writer wait: a worker that stops reading makes the broker's own bounded queue fill up
and count its drops, instead of frames piling up here. Each frame is bounded in bytes
by its writer (the broker's batch limit, the link's publish limit)."""


class _Aborted(Exception):
    """The servicer ended the call with a status (``context.abort``)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _ServicerContext:
    """The part of ``grpc.aio.ServicerContext`` that ``BrokerServicer.Attach`` uses."""

    linger = False
    """A frame handed over in the process costs no more than the operations in it:
    nothing to gain from gathering more (``BrokerServicer`` reads this)."""

    def __init__(self, metadata: Sequence[tuple[str, str]], to_edge: asyncio.Queue[Any]) -> None:
        self._metadata = tuple(metadata)
        self._to_edge = to_edge
        self.code = grpc.StatusCode.OK
        self.details = ""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def write(self, frame: broker_pb2.BrokerFrame) -> None:
        await self._to_edge.put(frame)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


_END = object()
"""Put in the edge's queue when the servicer is done, to wake a read waiting on it."""


class LocalAttachCall:
    """An ``Attach`` stream to a servicer in this process, with the methods of
    ``grpc.aio.StreamStreamCall`` that :class:`~django_ws_edge.links.BrokerLink` uses:
    ``write``, ``read`` (``grpc.aio.EOF`` at the end, ``AioRpcError`` on a status other
    than OK) and ``cancel``."""

    def __init__(self, servicer: BrokerServicer, metadata: Sequence[tuple[str, str]]) -> None:
        self._to_broker: asyncio.Queue[Any] = asyncio.Queue(IN_FLIGHT_FRAMES)
        self._to_edge: asyncio.Queue[Any] = asyncio.Queue(IN_FLIGHT_FRAMES)
        self._context = _ServicerContext(metadata, self._to_edge)
        self._error: grpc.aio.AioRpcError | None = None
        self._finished = False
        self._cancelled = False
        self._task = asyncio.get_running_loop().create_task(
            self._serve(servicer), name="broker-in-worker-attach"
        )
        self._task.add_done_callback(self._served)

    async def _frames(self) -> AsyncIterator[broker_pb2.EdgeFrame]:
        queue = self._to_broker
        while True:
            yield await queue.get()

    async def _serve(self, servicer: BrokerServicer) -> None:
        context = self._context
        try:
            await servicer.Attach(self._frames(), context)
        except _Aborted as exc:
            context.code, context.details = exc.code, exc.details

    def _served(self, task: asyncio.Task[None]) -> None:
        """The servicer's handler is done, however it ended (even cancelled before it
        ran): the edge's reads end with its status, and its writes fail."""
        if self._finished:
            return
        self._finished = True
        context = self._context
        if task.cancelled():
            if context.code == grpc.StatusCode.OK:
                context.code, context.details = grpc.StatusCode.CANCELLED, "cancelled"
        elif (failure := task.exception()) is not None:
            context.code = grpc.StatusCode.UNKNOWN
            context.details = f"the in-worker broker failed: {type(failure).__name__}: {failure}"
        if context.code != grpc.StatusCode.OK:
            self._error = _rpc_error(context.code, context.details)
        if self._cancelled:
            _drain(self._to_edge)  # what the edge left unread: let go
        # A read waits only on an empty queue: the marker wakes it. A full queue needs
        # none (nothing waits on it; its reader finds the end once it has drained it),
        # so nothing is left waiting for a reader that may never come.
        if not self._to_edge.full():
            self._to_edge.put_nowait(_END)
        # A writer waiting for room must not wait for a reader that is gone: what is
        # left is dropped (the link keeps its publishes until acknowledged), and the
        # next write raises.
        _drain(self._to_broker)

    async def write(self, frame: broker_pb2.EdgeFrame) -> None:
        if self._task.done():
            self._served(self._task)  # its callback may not have run yet
            raise self._error or ConnectionError("the in-worker broker ended this stream")
        await self._to_broker.put(frame)

    async def read(self) -> Any:
        if not self._cancelled and not (self._finished and self._to_edge.empty()):
            frame = await self._to_edge.get()
            if frame is not _END and not self._cancelled:
                return frame
        # The end, for this read and every later one. As with a cancelled gRPC call,
        # what the edge had not read when it cancelled is not returned.
        if self._cancelled:
            raise self._error or _rpc_error(grpc.StatusCode.CANCELLED, "cancelled")
        if self._error is not None:
            raise self._error
        return grpc.aio.EOF

    def cancel(self) -> bool:
        """End the stream from the edge's side: the servicer's handler is cancelled,
        as gRPC cancels it when a client cancels its call."""
        if self._task.done():
            return False
        self._cancelled = True
        self._task.cancel()
        return True

    async def wait_closed(self) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self._task


def _drain(queue: asyncio.Queue[Any]) -> None:
    while not queue.empty():
        queue.get_nowait()


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def broker_options(config: TransportConfig, *, tracing: bool) -> BrokerOptions:
    """The embedded broker's options, as CONFIG sets them for the broker process (an
    unset one keeps the broker's default)."""
    chosen: dict[str, Any] = {
        field: value for _flag, field, value in embedded_broker_settings(config)
    }
    return BrokerOptions(listen=config.brokers[0], tracing=tracing, **chosen)


async def start_broker_in_worker(
    config: TransportConfig, link: BrokerLink, *, tracing: bool
) -> Broker:
    """Start the embedded broker in this process on its unix socket (the supervisor
    checked the socket's directory and that nothing serves there), and point ``link``
    at it without gRPC. Call before the link starts; stop it after the link closed."""
    assert config.unix_path is not None
    broker = Broker(broker_options(config, tracing=tracing))
    await broker.start()
    check_broker_socket(config.unix_path)  # still ours once bound
    servicer = broker.servicer
    link.open_attach = lambda metadata: LocalAttachCall(servicer, metadata)
    return broker
