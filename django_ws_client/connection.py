"""What a consumer talks to: one websocket connection as the server sees it.

The edge server and the in-process test communicator each implement a
:class:`ConnectionPort`; the consumer never knows which. The port owns the rules that
must hold whoever serves the connection: handlers run one at a time in arrival order
(as in Channels), a handler that raises closes the connection with 1011, ``disconnect``
runs exactly once for an accepted connection, and the connection always leaves its
groups at the end.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from django_ws_client.asyncio_internals import swap_current_task
from django_ws_client.exceptions import StopConsumer
from django_ws_client.tracing import span, tracing_enabled

if TYPE_CHECKING:
    from django_ws_client.transport.base import ChannelLayer

logger = logging.getLogger("django_ws.consumer")

Event = Any  # a dict event or a GroupMessage

Position = tuple[str, int, int]
"""Where a group event stands in its group: (group, epoch, offset)."""

DEFAULT_SLOW_CLIENT_BYTES = 16 * 1024 * 1024
"""Bytes of channel layer events waiting for one consumer before its client is taken
for too slow and closed (1013): MiB-scale, so that bursts are absorbed."""


class BufferBudget:
    """The bytes of channel layer events waiting in every inbox of one process, and
    the most they may add up to: bounds memory per worker, whatever each connection's
    own bound allows."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class CloseCode:
    """Close codes django-ws sends, by why it sends them."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    POLICY = 1008  # rate limit, policy
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011  # a consumer raised
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013  # slow client: its unsent events passed the bound, or stalled


class ConnectionPort(ABC):
    """One connection: handshake decision, outgoing frames and the consumer's inbox."""

    # Class-level defaults, so an idle connection's instance dict holds none of them: a
    # server sets the limits per connection only when configured.
    max_pending_bytes = DEFAULT_SLOW_CLIENT_BYTES
    budget: BufferBudget | None = None
    # Bytes of channel layer events in the inbox.
    pending_bytes = 0
    # The position of the last event dispatched from each group (made on first use).
    positions: dict[str, Position] | None = None
    # What :func:`describe_task` says of the consumer while it runs: its class and the
    # type of the event it handles (set per event: cheaper than renaming its task).
    consumer_name = ""
    handling = ""
    # Whether an event that finds the consumer idle runs its handler at once, as the
    # consumer's task (Python 3.12+), instead of waking that task: servers set it when
    # their loop runs eager tasks. What runs so, its task and its context:
    eager_handlers = False
    _consumer: Any = None
    _task: asyncio.Task[Any] | None = None
    _context: contextvars.Context | None = None
    # A handler run at once that waits (_Rest), or a done future with how one ended
    # the consumer: the consumer's task takes it before anything else.
    _inflight: _Rest | asyncio.Future[bool] | None = None

    def __init__(self, *, channel_name: str, layer: ChannelLayer, capacity: int) -> None:
        self.channel_name = channel_name
        self.layer = layer
        # Frames from the client waiting for the consumer before the server stops
        # reading from the socket (Channels' ``capacity``); channel layer events are
        # bounded in bytes instead (``max_pending_bytes``).
        self.capacity = capacity
        self.expiry = layer.expiry
        self.expired = 0
        self.accepted = False
        self.rejected = False
        self.close_requested = False
        # (arrival time, event, size, position): events older than the layer's
        # ``expiry`` are dropped, as Channels drops messages nobody consumed in time. A
        # list, not a deque: an empty deque keeps a block of 64 slots, which thousands
        # of idle connections would pay for.
        self._inbox: list[tuple[float, Event, int, Position | None]] = []
        self._waiter: asyncio.Future[None] | None = None
        self._resume: Callable[[], None] | None = None
        self._disconnect_queued = False

    @property
    def decided(self) -> bool:
        """Whether the handshake has been accepted or rejected."""
        return self.accepted or self.rejected

    # What servers implement ------------------------------------------------------------

    @abstractmethod
    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Complete the handshake, choosing ``subprotocol`` and adding ``headers``."""

    @abstractmethod
    async def send(self, data: str | bytes) -> None:
        """Send one text (str) or binary (bytes) message."""

    @abstractmethod
    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the connection, or reject the handshake (HTTP 403) before accept."""

    @abstractmethod
    async def fail_handshake(self, status: int) -> None:
        """Answer the handshake with an HTTP error (a consumer raised before deciding)."""

    @abstractmethod
    async def leave_all_groups(self) -> None:
        """Remove this connection from every group it is in."""

    # Inbox -----------------------------------------------------------------------------

    def deliver(self, event: Event, size: int = 0, position: Position | None = None) -> bool:
        """Queue a channel layer event of ``size`` bytes for the consumer. Returns
        False when the events waiting for it pass ``max_pending_bytes``, or all
        consumers' pass the process's budget: the caller then closes the client as too
        slow. A burst of any count fits; only bytes bound it. Unlike frames from the
        client, these events expire (``expiry``)."""
        if self._disconnect_queued:
            return True  # the consumer is finishing; late events have no one to go to
        pending = self.pending_bytes = self.pending_bytes + size
        budget = self.budget
        if budget is not None:
            budget.used += size
        waiter = self._waiter
        if (
            self._consumer is not None  # eager_handlers, and the consumer runs
            and waiter is not None
            and not waiter.done()  # idle
            and self._inflight is None
            and not _starting_now
        ):
            self._handle_now(event, size, position)
        else:
            self._queue(time.monotonic(), event, size, position)
        if budget is not None and budget.used > budget.limit:
            return False
        return pending <= self.max_pending_bytes

    def discard_pending(self) -> int:
        """Drop the channel layer events still waiting (the client is being closed as
        too slow); returns how many, for the loss metric."""
        kept = [item for item in self._inbox if item[0] == math.inf]
        dropped = len(self._inbox) - len(kept)
        self._inbox = kept
        self._release(self.pending_bytes)
        return dropped

    def _release(self, size: int) -> None:
        self.pending_bytes -= size
        budget = self.budget
        if budget is not None:
            budget.used -= size

    def on_consumer_error(self, event_type: str) -> None:
        """A handler raised (already logged with its traceback); servers override this
        to count it in their metrics."""
        return None

    def deliver_disconnect(self, code: int) -> None:
        """Queue ``websocket.disconnect`` (always accepted, whatever is waiting)."""
        if not self._disconnect_queued:
            self._disconnect_queued = True
            self._queue(math.inf, {"type": "websocket.disconnect", "code": code}, 0, None)

    def deliver_from_client(self, event: Event) -> bool:
        """Queue a frame from the client. Never refused: a client's frames are not
        dropped. Returns False once the inbox is at capacity; the server then stops
        reading from the client until :meth:`when_room` calls back."""
        if self._disconnect_queued:
            return True
        self._queue(math.inf, event, 0, None)
        return len(self._inbox) < self.capacity

    def _queue(self, arrived: float, event: Event, size: int, position: Position | None) -> None:
        """Append to the inbox and wake the consumer if it is waiting for an event."""
        self._inbox.append((arrived, event, size, position))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def when_room(self, resume: Callable[[], None]) -> None:
        """Call ``resume`` once the consumer has taken its inbox below capacity."""
        self._resume = resume

    async def wait_for_room(self) -> None:
        """Wait until the inbox is below capacity (backpressure for inbound frames)."""
        while len(self._inbox) >= self.capacity and not self._disconnect_queued:
            room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.when_room(functools.partial(_set_once, room))
            await room

    def on_expired(self, event: Event) -> None:
        """An event waited past ``expiry`` and was dropped: logged (servers count it)."""
        logger.warning(
            "event %r for %s expired after %.0fs in its inbox and was dropped",
            event_type_of(event),
            self.channel_name,
            self.expiry,
        )

    def position(self, group: str) -> tuple[int, int] | None:
        """(epoch, offset) of the last event this consumer got from ``group``: while a
        handler runs, the position of the event it handles."""
        position = None if self.positions is None else self.positions.get(group)
        return None if position is None else (position[1], position[2])

    # The consumer's life ---------------------------------------------------------------

    async def run(self, consumer: Any) -> None:
        """Drive ``consumer`` from ``websocket.connect`` to ``websocket.disconnect``."""
        self._inbox.insert(0, (math.inf, {"type": "websocket.connect"}, 0, None))
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        # Known by its task, so the loop watchdog can say which consumer, handling
        # which event, blocked the loop (describe_task).
        self.consumer_name = type(consumer).__qualname__
        if task is not None:
            _running[task] = self
            if self.eager_handlers and swap_current_task is not None:
                # Handlers run at once run as this task, in its context (Task.get_context:
                # 3.12+, unknown to 3.11's stubs).
                own: Any = task
                self._consumer, self._task, self._context = consumer, task, own.get_context()
        try:
            while True:
                if not self._inbox:
                    # An idle consumer keeps no event alive (a client's last message
                    # could be large) while it waits for the next.
                    event = position = None
                    self._waiter = loop.create_future()
                    try:
                        await self._waiter
                    except asyncio.CancelledError as cancelled:
                        rest = self._inflight
                        if not isinstance(rest, _Rest):
                            raise
                        # Cancelled between a handler's first step and the rest: the
                        # handler gets it, as it would have had it run here all along.
                        rest.error = cancelled
                    finally:
                        self._waiter = None
                running = self._inflight
                if running is not None:
                    # A handler run at once (eager_handlers) waits, or ended the
                    # consumer: it comes before what queued meanwhile.
                    self._inflight = None
                    if await running:
                        break
                    continue
                arrived, event, size, position = self._inbox.pop(0)
                resume = self._resume
                if resume is not None and len(self._inbox) < self.capacity:
                    self._resume = None
                    resume()
                if await self._handle(consumer, arrived, event, size, position):
                    break
        finally:
            if task is not None:
                _running.pop(task, None)
            self._consumer = self._task = self._context = None
            running, self._inflight = self._inflight, None
            if isinstance(running, _Rest):
                running.coroutine.close()  # never resumed (not a path known to happen)
            await self.leave_all_groups()

    async def _handle(
        self, consumer: Any, arrived: float, event: Event, size: int, position: Position | None
    ) -> bool:
        """Run the consumer's handler for one event, with the connection's rules around
        it; True when the consumer is done (disconnected, rejected or stopped)."""
        if size:
            # Inlined _release(): this runs for every event of every member.
            self.pending_bytes -= size
            budget = self.budget
            if budget is not None:
                budget.used -= size
        if arrived != math.inf and time.monotonic() - arrived > self.expiry:
            self.expired += 1
            self.on_expired(event)
            return False
        if position is not None:
            positions = self.positions
            if positions is None:
                positions = self.positions = {}
            positions[position[0]] = position  # shared by every member
        event_type = self.handling = event_type_of(event)
        is_connect = event_type == "websocket.connect"
        is_disconnect = event_type == "websocket.disconnect"
        try:
            if event_type == "websocket.receive" and tracing_enabled():
                with span("django_ws receive", SpanKind.SERVER, channel=self.channel_name):
                    await consumer.dispatch(event)
            else:
                await consumer.dispatch(event)
        except StopConsumer:
            if not self.decided:
                await self.close()
            if is_disconnect or not self.accepted:
                return True
            await self.close(CloseCode.NORMAL)
        except Exception:
            logger.exception(
                "consumer %s raised while handling %r on %s",
                type(consumer).__qualname__,
                event_type_of(event),
                self.channel_name,
            )
            self.on_consumer_error(event_type)
            if is_disconnect:
                return True
            if not self.decided:
                await self.fail_handshake(500)
                return True
            await self.close(CloseCode.INTERNAL_ERROR)
        if is_disconnect:
            return True
        if is_connect and not self.decided:
            # The seed's promise: a connect that neither accepts nor closes accepts.
            await self.accept()
        return self.rejected

    def _handle_now(self, event: Event, size: int, position: Position | None) -> None:
        """Run the handler for a channel layer event that found the consumer idle at
        once (``eager_handlers``), as the consumer's task: its first step runs here,
        with the consumer's task current and in its context, as asyncio runs an eager
        task's first step. A handler that does not wait (a group message written
        straight to the socket) finishes here, and the consumer's task is never woken,
        nor any task made. One that waits is handed to the consumer's task, which goes
        on with it before anything that comes meanwhile. Either way handlers run one at
        a time, in order, in the consumer's context, and ``asyncio.current_task()``,
        ``asyncio.timeout`` and cancellation see the consumer's task, as in Channels.

        Only channel layer events run so: a client's frames and the disconnect arrive in
        websockets' protocol callbacks, where no consumer code should run."""
        global _starting_now
        # Just arrived: not expired (an inf arrival skips the check).
        coroutine = self._handle(self._consumer, math.inf, event, size, position)
        loop = self._waiter.get_loop()  # type: ignore[union-attr]
        _starting_now = True
        replaced = swap_current_task(loop, self._task)  # type: ignore[misc]
        try:
            waiting = self._context.run(coroutine.send, None)  # type: ignore[union-attr]
        except StopIteration as finished:
            if not finished.value:
                return  # handled, and the consumer goes on: nothing to tell its task
            self._inflight = outcome = loop.create_future()
            outcome.set_result(True)  # the consumer ended
        except (KeyboardInterrupt, SystemExit):
            raise  # as an asyncio task lets them through
        except BaseException as error:  # re-raised in the consumer's task
            self._inflight = outcome = loop.create_future()
            outcome.set_exception(error)
        else:
            self._inflight = _Rest(coroutine, waiting)
        finally:
            swap_current_task(loop, replaced)  # type: ignore[misc]
            _starting_now = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def describe(self) -> str:
        """Which consumer runs here, on which channel, handling what."""
        return f"{self.consumer_name} on {self.channel_name} handling {self.handling!r}"


# The port each consumer task runs, for describe_task(). Naming the task instead would
# keep a formatted name per connection and format it again on each change of event type.
_running: dict[asyncio.Task[Any], ConnectionPort] = {}

# Handlers run at once only from outside another such start: an event that one
# handler's first step sends to an idle consumer of this process queues for that
# consumer's task instead, so that starts never nest (nor enter a context twice).
_starting_now = False


class _Rest:
    """The rest of a handler whose first step ran at once and now waits for ``waiting``
    (what it yielded): the consumer's task awaits this to go on with it, as asyncio's
    task would go on with a coroutine. Cancellation reaches the handler as it would in
    a task: through the future it waits for, or thrown in (``error``, when the
    consumer's task was cancelled before it took the handler up)."""

    __slots__ = ("coroutine", "error", "waiting")

    def __init__(self, coroutine: Coroutine[Any, Any, bool], waiting: Any) -> None:
        self.coroutine = coroutine
        self.waiting = waiting
        self.error: BaseException | None = None

    def __await__(self) -> Generator[Any, None, bool]:
        coroutine, waiting, error = self.coroutine, self.waiting, self.error
        self.waiting = self.error = None
        while True:
            if error is None:
                try:
                    yield waiting
                except GeneratorExit:
                    coroutine.close()
                    raise
                except BaseException as thrown:  # passed on to the handler
                    error = thrown
            try:
                waiting = coroutine.send(None) if error is None else coroutine.throw(error)
            except StopIteration as finished:
                return bool(finished.value)
            error = None


def describe_task(task: asyncio.Task[Any]) -> str:
    """What ``task`` runs: the consumer and the event it handles when it is a consumer's
    task (handlers run at once run as it too), its own name otherwise. Safe from
    another thread (the loop watchdog's): one dict lookup and attribute reads."""
    port = _running.get(task)
    return port.describe() if port is not None else task.get_name()


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def event_type_of(event: Event) -> str:
    if isinstance(event, dict):
        return str(event.get("type", ""))
    return str(getattr(event, "type", ""))
