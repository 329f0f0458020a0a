"""The supervisor: starts N workers on one address, replaces those that die, and shuts
everything down in order on SIGTERM or SIGINT.

Workers are fresh interpreters (``python -m django_ws_edge.worker``), not forks, so no
gRPC channel or event loop is ever shared across a fork.

Workers share one listening socket (TCP or unix): a worker that stops accepting, because
its loop is blocked or its process stopped, leaves new connections to the others
instead of holding its share of them. Its heartbeats stop too: past the heartbeat
timeout ``/readyz`` says 503, past the wedged timeout it is killed and replaced.

Every child holds the read end of a lifeline pipe whose only write end is here, so
children end when the supervisor does, even when it is killed (:mod:`.lifeline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from django_ws_client.exceptions import UnsafeBrokerSocket
from django_ws_client.transport.config import TransportConfig
from django_ws_edge.embedded import (
    BrokerNotFound,
    EmbeddedBroker,
    claim_embedded_socket,
    claim_for_worker,
    ensure_brokers,
    release_for_worker,
)
from django_ws_edge.health import ProbeServer
from django_ws_edge.metrics_store import retire_process
from django_ws_edge.options import (
    BROKER_IN_WORKER_SETTING,
    HEARTBEAT_INTERVAL_MAX,
    ServerOptions,
    WorkerOptions,
    broker_in_worker_setting,
    worker_options_from_settings,
)
from django_ws_edge.sockets import parse_bind, tcp_socket, unix_socket

logger = logging.getLogger("django_ws.edge")

RESTART_BACKOFF_MAX = 10.0


@dataclass
class WorkerSlot:
    """One worker position: the process in it now and what it last reported."""

    index: int
    process: asyncio.subprocess.Process | None = None
    status: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    restarts: int = 0
    status_reader: asyncio.Task[None] | None = None
    last_beat: float | None = None
    """When the worker's loop last wrote a line (None: not yet started)."""
    blocked_by: str | None = None
    """The consumer the worker's watchdog last named as blocking its loop."""
    silent_logged: bool = False
    killed_as_wedged: bool = False

    def silent_for(self, now: float) -> float:
        """Seconds since the last heartbeat (0 before the worker's first one)."""
        return 0.0 if self.last_beat is None else now - self.last_beat


class SupervisorCollector(Collector):
    """The supervisor's own figures for ``/metrics``, next to the workers' merged ones."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "django_ws_edge_workers_replaced",
            "Workers the supervisor replaced, by reason: died (exited on their own) or "
            "wedged (no heartbeat, killed). Their open connections were lost.",
            labels=["reason"],
        )
        for reason, count in sorted(self.supervisor.replaced.items()):
            family.add_metric([reason], count)
        yield family


class Supervisor:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.bind = parse_bind(options.bind)
        self.slots = [WorkerSlot(index) for index in range(options.workers)]
        self.stopping = False
        self.listen_socket: socket.socket | None = None
        self.broker: EmbeddedBroker | None = None
        # The embedded broker's address when the (one) worker hosts it instead.
        self.worker_hosts_broker = ""
        self.probes: ProbeServer | None = None
        self.metrics_dir = ""
        self.worker_options: WorkerOptions | None = None
        # The lifeline: children inherit the read end; the write end never leaves this
        # process, so the kernel closes it when this process dies, however it dies.
        self.lifeline_read, self.lifeline_write = os.pipe()
        self.replaced: dict[str, int] = {"died": 0, "wedged": 0}
        # Metric values in memory only, of workers that died and of the supervisor.
        self.metrics_degraded = 0
        self.metrics_lost = 0

    def _broker_in_worker(self, config: TransportConfig) -> bool:
        """Whether WEBSOCKET_SERVER['BROKER_IN_WORKER'] applies here: it asks for the
        embedded broker inside the worker, which one worker on the embedded unix socket
        allows; otherwise the broker runs as before, and the log says why."""
        if not broker_in_worker_setting():
            return False
        why = None
        if len(self.slots) != 1:
            why = f"this server runs {len(self.slots)} workers (it needs -w 1)"
        elif config.unix_path is None or not self.options.embedded_broker:
            why = "this server uses brokers of its own, not the embedded one"
        if why is not None:
            logger.warning(
                "%s is True, but %s: the broker runs in its own process",
                BROKER_IN_WORKER_SETTING,
                why,
            )
            return False
        return True

    # Readiness -----------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, object]]:
        now = time.monotonic()
        timeout = self.options.heartbeat_timeout
        workers = [
            {
                "index": s.index,
                "pid": s.status.get("pid"),
                "ready": bool(s.status.get("ready")) and s.silent_for(now) <= timeout,
                "silent_for": round(s.silent_for(now), 2),
            }
            for s in self.slots
        ]
        ready = not self.stopping and all(w["ready"] for w in workers)
        return ready, {"ready": ready, "draining": self.stopping, "workers": workers}

    # Workers -------------------------------------------------------------------------

    async def _spawn(self, slot: WorkerSlot) -> None:
        assert self.worker_options is not None
        read_fd, write_fd = os.pipe()
        pass_fds = [write_fd, self.lifeline_read]
        options = self.worker_options
        if self.listen_socket is not None:
            pass_fds.append(self.listen_socket.fileno())
        options = WorkerOptions(
            **{**options.__dict__, "status_fd": write_fd, "lifeline_fd": self.lifeline_read}
        )
        env = dict(os.environ)
        if self.metrics_dir:
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        else:
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # metrics in each worker's memory
        # websockets reads its HTTP parsing limits from the environment at import.
        env["WEBSOCKETS_MAX_LINE_LENGTH"] = str(options.max_header_line)
        env["WEBSOCKETS_MAX_NUM_HEADERS"] = str(options.max_headers)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        slot.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "django_ws_edge.worker",
            options.to_json(),
            pass_fds=pass_fds,
            env=env,
        )
        os.close(write_fd)
        slot.status = {}
        slot.last_beat = None
        slot.blocked_by = None
        slot.silent_logged = False
        slot.killed_as_wedged = False
        slot.started_at = time.monotonic()
        slot.status_reader = asyncio.get_running_loop().create_task(
            self._read_status(slot, read_fd, slot.process.pid)
        )
        logger.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    async def _read_status(self, slot: WorkerSlot, fd: int, pid: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb")
        )
        try:
            while line := await reader.readline():
                if slot.process is None or slot.process.pid != pid:
                    continue
                message = json.loads(line)
                if "blocked_by" in message:  # from the watchdog's thread: no heartbeat
                    slot.blocked_by = str(message["blocked_by"])
                    continue
                slot.status = message
                slot.last_beat = time.monotonic()
                if slot.silent_logged:
                    logger.warning("worker %d (pid %d) sends heartbeats again", slot.index, pid)
                slot.blocked_by = None
                slot.silent_logged = False
        finally:
            transport.close()

    async def _watch(self, slot: WorkerSlot) -> None:
        """Wait for the worker in ``slot`` to exit and replace it unless stopping."""
        while True:
            assert slot.process is not None
            code = await slot.process.wait()
            pid = slot.process.pid
            self._retire(slot, pid)
            if self.stopping:
                return
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            logger.error(
                "worker %d (pid %d) died with %s; starting a replacement", slot.index, pid, how
            )
            slot.restarts += 1
            self.replaced["wedged" if slot.killed_as_wedged else "died"] += 1
            quick = time.monotonic() - slot.started_at < 1.0
            if quick:
                await asyncio.sleep(min(RESTART_BACKOFF_MAX, 0.2 * 2 ** min(slot.restarts, 6)))
            if self.stopping:
                return
            await self._spawn(slot)

    async def _watch_heartbeats(self) -> None:
        """Report silent workers not ready, and replace those silent past the wedged
        timeout: SIGKILL, because a blocked loop runs no signal handler and a stopped
        process takes no other signal; ``_watch`` then starts the replacement."""
        heartbeat, wedged = self.options.heartbeat_timeout, self.options.wedged_timeout
        while not self.stopping:
            await asyncio.sleep(min(0.1, heartbeat / 10))
            now = time.monotonic()
            for slot in self.slots:
                process = slot.process
                if process is None or process.returncode is not None or self.stopping:
                    continue
                silent = slot.silent_for(now)
                running = (
                    f"the event loop was blocked by {slot.blocked_by}"
                    if slot.blocked_by
                    else "the consumer running is unknown: the process may be stopped"
                )
                if silent > wedged:
                    logger.error(
                        "worker %d (pid %d) sent no heartbeat for %.1fs (%s): killing it "
                        "(SIGKILL) and starting a replacement; its connections are lost",
                        slot.index,
                        process.pid,
                        silent,
                        running,
                    )
                    slot.killed_as_wedged = True
                    slot.last_beat = None  # once: _watch respawns when the kill lands
                    slot.status = {}  # not ready from now on
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                elif silent > heartbeat and not slot.silent_logged:
                    slot.silent_logged = True
                    logger.error(
                        "worker %d (pid %d) sent no heartbeat for %.1fs (%s): /readyz reports "
                        "not ready; it is replaced if still silent after %.0fs",
                        slot.index,
                        process.pid,
                        silent,
                        running,
                        wedged,
                    )

    async def _watch_broker(self, broker: EmbeddedBroker, config: TransportConfig) -> None:
        """Restart the embedded broker if it dies: workers keep their members and
        subscribe again when their links reconnect, so clients see no interruption
        beyond the messages sent while it was down."""
        failures = 0
        while not self.stopping:
            await asyncio.sleep(0.2)
            process = broker.process
            if process is None or process.poll() is None or self.stopping:
                continue
            failures += 1
            logger.error(
                "the embedded broker (pid %d) died with code %s; restarting it",
                process.pid,
                process.returncode,
            )
            try:
                await broker.start(config)
                failures = 0
            except (BrokerNotFound, UnsafeBrokerSocket) as exc:
                logger.error("%s; retrying", exc)
                await asyncio.sleep(min(RESTART_BACKOFF_MAX, 0.5 * 2**failures))

    def _retire(self, slot: WorkerSlot, pid: int) -> None:
        """A worker died: keep its counts in the totals and remove its metrics files,
        so restarts never pile files up in the metrics directory."""
        self.metrics_degraded += int(slot.status.get("metrics_degraded", 0))
        slot.status = {}
        if not self.metrics_dir:
            return
        try:
            self.metrics_lost += retire_process(pid, self.metrics_dir)
        except Exception:  # metrics must never stop a restart
            logger.exception("metrics: could not retire the files of pid %d", pid)

    def metrics_counts(self) -> dict[str, int]:
        """The supervisor's counts about metrics, for ``/metrics``."""
        live = sum(int(s.status.get("metrics_degraded", 0)) for s in self.slots)
        return {"degraded": self.metrics_degraded + live, "lost": self.metrics_lost}

    def _make_metrics_dir(self) -> str:
        """A fresh directory for the workers' metrics files, inside
        ``PROMETHEUS_MULTIPROC_DIR`` when that is set (else the temp dir). When none can
        be made the server still runs, with metrics in each worker's memory."""
        # Taken out of our environment: the embedded broker must not inherit it.
        parent = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", "") or None
        try:
            return tempfile.mkdtemp(prefix="django-ws-metrics-", dir=parent)
        except OSError as exc:
            self.metrics_degraded += 1
            logger.error(
                "metrics: cannot create a directory in %s (%s); workers keep their metrics "
                "in memory and /metrics shows only the supervisor's counters",
                parent or tempfile.gettempdir(),
                exc,
            )
            return ""

    # Life ----------------------------------------------------------------------------

    def _prepare_listener(self) -> None:
        # One listening socket, inherited by every worker: its accept queue is shared,
        # so connections go to whichever worker is free to accept them.
        if self.bind.is_unix:
            self.listen_socket = unix_socket(self.bind)
        else:
            self.listen_socket = tcp_socket(self.bind, listen=True)
        self.listen_socket.set_inheritable(True)

    async def run(self) -> int:
        from django_ws_client.transport import layer_config

        options = self.options
        # Signals first: a SIGTERM while brokers are still being awaited must stop us
        # at once, not after the whole grace period.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        orphaned = loop.create_task(_stop_when_orphaned(stop)) if options.exit_with_parent else None
        config = layer_config(options.alias)
        setting = f"WEBSOCKET_TRANSPORT_BACKENDS['{options.alias}']['CONFIG']"
        self._prepare_listener()
        self.metrics_dir = self._make_metrics_dir()
        in_worker = self._broker_in_worker(config)
        try:
            finding: asyncio.Task[Any] = loop.create_task(
                claim_embedded_socket(config)
                if in_worker
                else ensure_brokers(
                    config,
                    setting,
                    options.embedded_broker,
                    self.lifeline_read,
                    event_loop=options.event_loop,
                )
            )
            stopped = loop.create_task(stop.wait())
            await asyncio.wait({finding, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not finding.done():
                finding.cancel()
                logger.info("stopped while waiting for the brokers")
                return 0
            stopped.cancel()
            if in_worker:
                in_worker = bool(finding.result())
                if in_worker:
                    claim_for_worker(config.brokers[0])
                    self.worker_hosts_broker = config.brokers[0]
                    logger.info(
                        "the embedded broker runs inside the worker, on %s", config.brokers[0]
                    )
            else:
                self.broker = finding.result()
            self.worker_options = worker_options_from_settings(
                str(self.bind), options.alias, options.grace_seconds
            )
            assert self.listen_socket is not None
            self.worker_options = WorkerOptions(
                **{
                    **self.worker_options.__dict__,
                    "inherited_fd": self.listen_socket.fileno(),
                    "event_loop": options.event_loop,
                    "broker_in_worker": in_worker,
                    # A few heartbeats per timeout, so one late line is not a miss.
                    "heartbeat_interval": min(
                        HEARTBEAT_INTERVAL_MAX, options.heartbeat_timeout / 4
                    ),
                }
            )
            if options.health_bind:
                health = parse_bind(options.health_bind)
                self.probes = ProbeServer(
                    self.readiness, self.metrics_dir, SupervisorCollector(self), self.metrics_counts
                )
                await self.probes.start(health.host, health.port)
                logger.info("probes and metrics on http://%s:%d/", health.host, self.probes.port)
            for slot in self.slots:
                await self._spawn(slot)
            watchers = [loop.create_task(self._watch(slot)) for slot in self.slots]
            watchers.append(loop.create_task(self._watch_heartbeats()))
            if self.broker is not None:
                watchers.append(loop.create_task(self._watch_broker(self.broker, config)))
            logger.info("serving websockets on %s with %d workers", self.bind, len(self.slots))
            await stop.wait()
            await self._shutdown(watchers)
            return 0
        finally:
            if orphaned is not None:
                orphaned.cancel()
            if self.broker is not None:
                self.broker.stop()
            if self.worker_hosts_broker:
                release_for_worker(self.worker_hosts_broker)
            if self.probes is not None:
                await self.probes.close()
            if self.listen_socket is not None:
                self.listen_socket.close()
            if self.bind.is_unix and self.listen_socket is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.bind.path)
            if self.metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def _shutdown(self, watchers: list[asyncio.Task[None]]) -> None:
        self.stopping = True
        logger.info("shutting down: workers close connections with 1001")
        processes = [
            s.process for s in self.slots if s.process is not None and s.process.returncode is None
        ]
        for process in processes:
            process.send_signal(signal.SIGTERM)
        deadline = self.options.grace_seconds + 2
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), deadline)
        except TimeoutError:
            for process in processes:
                if process.returncode is None:
                    logger.error("worker pid %d did not stop in time; killing it", process.pid)
                    process.kill()
            await asyncio.gather(*(p.wait() for p in processes))
        for watcher in watchers:
            watcher.cancel()


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """Set ``stop`` once the parent process is gone: a development server killed
    outright (its autoreloader, a test) must not leave its websocket server behind."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 (no event tells of a parent's death)
        await asyncio.sleep(0.2)
    logger.info("the process that started this server is gone; stopping")
    stop.set()


def run(options: ServerOptions) -> int:
    """Run the server until SIGTERM/SIGINT; returns the process exit code."""
    return asyncio.run(Supervisor(options).run())
