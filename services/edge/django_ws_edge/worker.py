"""One edge worker process: a websockets server running Django consumers.

Started by the supervisor as ``python -m django_ws_edge.worker OPTIONS_JSON`` with the
project's settings in the environment. It reports its state (listening, broker links up,
draining) as JSON lines on a pipe the supervisor reads, which is how ``/readyz`` and the
tests know it is ready without sleeping. The event loop writes a line at least every
``heartbeat_interval`` seconds: that is its heartbeat, so a blocked loop or a stopped
process goes silent and the supervisor replaces it. The loop watchdog's thread adds a
line naming the consumer that blocks the loop, for the supervisor's log.

The worker ends when the supervisor does, however it ends (see :mod:`.lifeline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from opentelemetry.trace import SpanKind
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from django_ws_client.connection import BufferBudget
from django_ws_client.exceptions import DenyConnection, HandshakeRejected
from django_ws_client.tracing import span, tracing_enabled
from django_ws_client.transport import layer_config, serve_aliases
from django_ws_edge import metrics
from django_ws_edge.connection import EdgeConnection
from django_ws_edge.guards import SourceLogLimiter, TokenBucket, invalid_handshake
from django_ws_edge.keepalive import KeepaliveSchedule, run_keepalive
from django_ws_edge.layer import EdgeChannelLayer
from django_ws_edge.lifeline import set_parent_death_signal, watch_lifeline
from django_ws_edge.metrics_store import degraded_values
from django_ws_edge.options import EVENT_LOOP_SETTING, WorkerOptions
from django_ws_edge.runtime import (
    connections_allowed_by,
    eager_tasks_running,
    install_eager_tasks,
    raise_open_file_limit,
)
from django_ws_edge.scope import build_scope
from django_ws_edge.server_connection import EdgeServerConnection, edge_connection_class
from django_ws_edge.sockets import BACKLOG, parse_bind, tcp_socket
from django_ws_edge.watchdog import LoopWatchdog
from django_ws_proto.event_loop import LoopChoice, resolve_event_loop, running_loop_name
from django_ws_proto.event_loop import run as run_on_loop

logger = logging.getLogger("django_ws.edge")

_REASONS = {
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Worker:
    """Serves websockets for one process and owns its broker links."""

    def __init__(self, options: WorkerOptions, app: Any, layer: EdgeChannelLayer) -> None:
        self.options = options
        self.app = app
        self.layer = layer
        self.capacity = layer.config.capacity
        # Limits every connection of this worker shares: set once on the class, so no
        # idle connection carries them in its own dict.
        EdgeConnection.max_pending_bytes = options.slow_client_bytes
        EdgeConnection.slow_client_seconds = options.slow_client_seconds
        EdgeConnection.budget = layer.local.budget = BufferBudget(options.worker_buffer_bytes)
        # With eager tasks, an event that finds its consumer idle runs the handler at
        # once instead of waking the consumer's task (ConnectionPort.eager_handlers).
        EdgeConnection.eager_handlers = eager_tasks_running(asyncio.get_running_loop())
        self.server: Server | None = None
        self.draining = False
        self.bad_request_log = SourceLogLimiter()
        self._status_file = (
            os.fdopen(options.status_fd, "w", buffering=1) if options.status_fd else None
        )
        self._last_status: dict[str, Any] = {}
        self._status_lock = threading.Lock()  # the loop and the watchdog's thread write
        self._last_write = 0.0

    # Handshake -----------------------------------------------------------------------

    def _port_of(self, websocket: ServerConnection) -> EdgeConnection:
        assert isinstance(websocket, EdgeServerConnection) and websocket.django_ws_port
        return websocket.django_ws_port

    def _respond(self, websocket: ServerConnection, status: int) -> Response:
        metrics.HANDSHAKES_REJECTED.labels(metrics.status_label(status)).inc()
        return websocket.respond(status, f"{status} {_REASONS.get(status, 'Error')}\n")

    async def process_request(
        self, websocket: ServerConnection, request: Request
    ) -> Response | None:
        if self.draining:
            return self._respond(websocket, 503)
        # Connections count from the start of their handshake until their consumer
        # finishes, so a storm of simultaneous handshakes cannot overshoot the limit.
        if len(self.layer.local.connections) >= self.options.max_connections:
            if self.bad_request_log.allow("connection limit"):
                logger.warning(
                    "connection limit of %d reached: answering 503 (logged once a second)",
                    self.options.max_connections,
                )
            return self._respond(websocket, 503)
        with span("django_ws connect", SpanKind.SERVER, path=request.path) as current:
            response = await self._handshake(websocket, request)
            if current is not None:
                current.set_attribute("http.status_code", response.status_code if response else 101)
            return response

    async def _handshake(self, websocket: ServerConnection, request: Request) -> Response | None:
        invalid = invalid_handshake(request)
        if invalid is not None:
            metrics.HANDSHAKES_REJECTED.labels(metrics.status_label(invalid.status_code)).inc()
            source = str(websocket.remote_address[0]) if websocket.remote_address else "unix"
            if self.bad_request_log.allow(source):
                logger.warning(
                    "answered %d to a request from %s that is not a websocket handshake: %s",
                    invalid.status_code,
                    source,
                    invalid.body.decode(errors="replace").strip().splitlines()[0],
                )
            return invalid
        if self.options.socket_send_buffer:
            # A small kernel buffer makes a client that stops reading block our sends
            # (and be closed as too slow) after kilobytes instead of megabytes.
            sock = websocket.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDBUF, self.options.socket_send_buffer
                )
        scope = build_scope(websocket, request)
        limiter = (
            TokenBucket(self.options.rate_limit, self.options.rate_burst)
            if self.options.rate_limit
            else None
        )
        port = EdgeConnection(websocket, self.layer, self.capacity, limiter)
        assert isinstance(websocket, EdgeServerConnection)
        websocket.attach(port)
        self.layer.register(port)
        port.task = asyncio.get_running_loop().create_task(self._run_app(scope, port))
        decided = port.decision
        assert decided is not None  # until the connection opens
        waiters: set[asyncio.Future[Any]] = {decided, port.task}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Handshake timeout: connect() never decided. Stop the consumer too.
            port.task.cancel()
            self.layer.unregister(port.channel_name)
            raise
        if decided.done():
            decision = decided.result()
            if decision.accept:
                return None
            return self._respond(websocket, decision.status)
        return self._respond(websocket, self._status_for(port.task))

    def _status_for(self, task: asyncio.Task[None]) -> int:
        """The HTTP status for a stack that ended without deciding the handshake."""
        exc = task.exception() if not task.cancelled() else None
        if isinstance(exc, HandshakeRejected):
            return exc.status
        if isinstance(exc, DenyConnection):
            return 403
        if exc is not None:
            logger.error(
                "websocket middleware or consumer failed during the handshake", exc_info=exc
            )
            return 500
        return 403

    async def _run_app(self, scope: dict[str, Any], port: EdgeConnection) -> None:
        try:
            await self.app(scope, port)
        finally:
            self.layer.unregister(port.channel_name)

    def select_subprotocol(self, websocket: ServerConnection, offered: Any) -> Any:
        port = self._port_of(websocket)
        decided = port.decision
        chosen = decided.result().subprotocol if decided is not None and decided.done() else None
        if chosen is not None and chosen not in offered:
            logger.warning("consumer chose subprotocol %r that the client did not offer", chosen)
            return None
        return chosen

    def process_response(
        self, websocket: ServerConnection, request: Request, response: Response
    ) -> None:
        port = getattr(websocket, "django_ws_port", None)
        decided = port.decision if port is not None else None
        if decided is not None and decided.done() and response.status_code == 101:
            headers: Headers = response.headers
            for name, value in decided.result().headers:
                headers[name.decode("latin-1")] = value.decode("latin-1")

    # Connection ----------------------------------------------------------------------

    async def handler(self, websocket: ServerConnection) -> None:
        """Runs from the end of the handshake to the end of the connection. Messages do
        not pass through here: the connection hands them to the port as they are
        parsed (see ``server_connection``). What is left is the connection's end."""
        port = self._port_of(websocket)
        metrics.CONNECTIONS_OPENED.inc()
        metrics.CONNECTIONS_OPEN.inc()
        ended = port.mark_open()
        try:
            await ended
        finally:
            code = websocket.close_code if websocket.close_code is not None else 1006
            metrics.CONNECTIONS_CLOSED.labels(metrics.close_code_label(code)).inc()
            metrics.CONNECTIONS_OPEN.dec()
            port.deliver_disconnect(code)
            assert port.task is not None
            try:
                await asyncio.wait_for(asyncio.shield(port.task), self.options.grace_seconds)
            except TimeoutError:
                logger.error(
                    "consumer on %s did not finish disconnect() in time", port.channel_name
                )
            except Exception:
                pass  # already logged by the port

    # Life ----------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        with self._status_lock:
            if self._status_file is None:
                return
            try:
                self._status_file.write(json.dumps(message) + "\n")
            except (BrokenPipeError, ValueError):
                self._status_file = None  # the supervisor is gone; the watcher stops us

    def report(self, **changes: Any) -> None:
        """Send the status if it changed or a heartbeat is due. Call from the loop only:
        every line it sends is a heartbeat."""
        status = {**self._last_status, **changes, "pid": os.getpid()}
        now = time.monotonic()
        if status != self._last_status or now - self._last_write >= self.options.heartbeat_interval:
            self._send(status)
            self._last_write = now
        self._last_status = status

    def report_blocked(self, culprit: str, lag: float) -> None:
        """From the watchdog's thread while the loop is blocked: not a heartbeat, but
        the name the supervisor logs if it has to replace this worker."""
        self._send({"blocked_by": culprit, "blocked_for": round(lag, 2)})

    async def _watch_readiness(self, stop: asyncio.Event) -> None:
        parent = os.getppid()
        while True:
            self.report(
                ready=self.layer.ready and not self.draining,
                draining=self.draining,
                metrics_degraded=degraded_values(),
            )
            self.layer.tally.flush()
            self.layer.close_stalled_clients(asyncio.get_running_loop().time())
            if os.getppid() != parent or (self.options.status_fd and self._status_file is None):
                logger.error("the supervisor went away; worker %d stops", os.getpid())
                stop.set()
                return
            await asyncio.sleep(min(0.1, self.options.heartbeat_interval))

    @staticmethod
    def _supervisor_gone(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        """From the lifeline's thread: drain as on SIGTERM (the thread exits the process
        hard if the loop is too blocked to do it in time)."""
        logger.error("the supervisor went away; worker %d stops", os.getpid())
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stop.set)

    def _listening_socket(self) -> socket.socket:
        if self.options.inherited_fd is not None:
            return socket.socket(fileno=self.options.inherited_fd)
        return tcp_socket(parse_bind(self.options.bind), listen=True)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (by default: until SIGTERM or SIGINT), then drain."""
        options = self.options
        loop = asyncio.get_running_loop()
        if stop is None:
            stop = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
        if options.lifeline_fd is not None:
            watch_lifeline(options.lifeline_fd, lambda: self._supervisor_gone(loop, stop))
        self.layer.start()
        sock = self._listening_socket()
        # One ping schedule for the worker's connections, not a task for each.
        keepalive = (
            None
            if options.ping_interval is None
            else KeepaliveSchedule(options.ping_interval, options.ping_timeout)
        )
        self.server = await serve(
            self.handler,
            sock=sock,
            process_request=self.process_request,
            process_response=self.process_response,
            select_subprotocol=self.select_subprotocol,
            compression="deflate" if options.compression else None,
            open_timeout=options.handshake_timeout,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            close_timeout=options.close_timeout,
            max_size=options.max_message_bytes,
            write_limit=options.write_limit,
            server_header="django-ws",
            create_connection=edge_connection_class(options.max_write_buffer, keepalive),
            # create_server() calls listen() again on the socket it is given, with its
            # own backlog (100 unless told): a connect storm would overflow it while the
            # workers are busy, and the kernel would drop SYNs that clients retry only
            # after 1, 3 and 7 s (or give up on).
            backlog=BACKLOG,
        )
        pinger = None if keepalive is None else loop.create_task(run_keepalive(keepalive))
        # Django, the app and every module are loaded: move what exists now out of the
        # collector's reach. Full collections then walk only what connections create,
        # not the hundreds of thousands of start-up objects that never become garbage.
        gc.freeze()
        self.report(listening=True, ready=False, edge_id=self.layer.edge_id)
        watchdog = LoopWatchdog(loop, options.blocked_loop_warning, self.report_blocked)
        watchdog.start()
        watcher = loop.create_task(self._watch_readiness(stop))
        logger.info("worker %d serving %s as %s", os.getpid(), options.bind, self.layer.edge_id)
        await stop.wait()
        logger.info("worker %d draining: closing connections with 1001", os.getpid())
        self.draining = True
        self.report(ready=False, draining=True)
        self.server.close(close_connections=True)
        try:
            await asyncio.wait_for(self.server.wait_closed(), options.grace_seconds)
        except TimeoutError:
            logger.error(
                "connections still open after %.0fs; exiting anyway", options.grace_seconds
            )
        watcher.cancel()
        if pinger is not None:
            pinger.cancel()
        watchdog.stop()
        self.layer.tally.flush()
        await self.layer.close()


def configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=os.environ.get("DJANGO_WS_LOG_LEVEL", "INFO").upper(),
            format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
            stream=sys.stderr,
        )
    # websockets logs every handshake at INFO; keep its warnings and errors only.
    logging.getLogger("websockets").setLevel(logging.WARNING)


async def _main(options: WorkerOptions, loop: LoopChoice) -> None:
    from django_ws_client.conf import middleware_paths
    from django_ws_client.middlewares.base import build_stack

    _start_runtime(options, loop)
    # Installs the tracer provider before any traffic when tracing is on.
    tracing = tracing_enabled()
    config = layer_config(options.alias)
    layer = EdgeChannelLayer(config)
    broker = None
    if options.broker_in_worker:
        from django_ws_edge.broker_in_worker import start_broker_in_worker

        broker = await start_broker_in_worker(config, layer.links[0], tracing=tracing)
    app = build_stack(middleware_paths())
    try:
        with serve_aliases(layer, options.alias) as aliases:
            if len(aliases) > 1:
                logger.info("serving channel layer aliases %s", ", ".join(map(repr, aliases)))
            await Worker(options, app, layer).run()
    finally:
        if broker is not None:
            await broker.drain_and_stop()


def _start_runtime(options: WorkerOptions, loop: LoopChoice) -> None:
    """Eager tasks and the open file limit, then one line saying what this worker runs
    on: the loop named from the running loop's class, so the line proves it."""
    eager = install_eager_tasks(asyncio.get_running_loop(), options.eager_tasks)
    soft, hard = raise_open_file_limit()
    logger.info(
        "worker %d runs on the %s event loop (%s; WEBSOCKET_SERVER['EVENT_LOOP'] = %r), "
        "eager tasks %s, open file limit %d (hard %d)",
        os.getpid(),
        running_loop_name(),
        loop.describe(),
        options.event_loop,
        eager,
        soft,
        hard,
    )
    allowed = connections_allowed_by(soft)
    if soft >= 0 and allowed < options.max_connections:  # soft < 0: no such limit here
        logger.warning(
            "WEBSOCKET_SERVER['MAX_CONNECTIONS'] is %d, but an open file limit of %d lets a "
            "worker hold about %d connections: past that, handshakes fail with EMFILE "
            "instead of HTTP 503 (raise the limit, e.g. LimitNOFILE= or ulimit -n)",
            options.max_connections,
            soft,
            allowed,
        )


def main(argv: list[str] | None = None) -> None:
    import django

    args = sys.argv[1:] if argv is None else argv
    options = WorkerOptions.from_json(args[0])
    # Ended with SIGTERM if the supervisor dies, even blocked or before the loop runs.
    set_parent_death_signal(signal.SIGTERM, os.getppid())
    django.setup()
    configure_logging()
    # Checked by the command already; checked again here, as this process imports it.
    loop = resolve_event_loop(options.event_loop, EVENT_LOOP_SETTING)
    run_on_loop(_main(options, loop), loop)


if __name__ == "__main__":
    main()
