"""The supervisor: starts N workers on one address, replaces those that die, and shuts
everything down in order on SIGTERM or SIGINT.

Workers are fresh interpreters (``python -m django_ws_edge.worker``), not forks, so no
gRPC channel or event loop is ever shared across a fork.
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
from dataclasses import dataclass, field
from typing import Any

from django_ws_client.transport.config import TransportConfig
from django_ws_edge.embedded import BrokerNotFound, EmbeddedBroker, ensure_brokers
from django_ws_edge.health import ProbeServer
from django_ws_edge.options import ServerOptions, WorkerOptions, worker_options_from_settings
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


class Supervisor:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.bind = parse_bind(options.bind)
        self.slots = [WorkerSlot(index) for index in range(options.workers)]
        self.stopping = False
        self.listen_socket: socket.socket | None = None
        self.broker: EmbeddedBroker | None = None
        self.probes: ProbeServer | None = None
        self.metrics_dir = ""
        self.worker_options: WorkerOptions | None = None

    # Readiness -----------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, object]]:
        workers = [
            {"index": s.index, "pid": s.status.get("pid"), "ready": bool(s.status.get("ready"))}
            for s in self.slots
        ]
        ready = not self.stopping and all(w["ready"] for w in workers)
        return ready, {"ready": ready, "draining": self.stopping, "workers": workers}

    # Workers -------------------------------------------------------------------------

    async def _spawn(self, slot: WorkerSlot) -> None:
        assert self.worker_options is not None
        read_fd, write_fd = os.pipe()
        pass_fds = [write_fd]
        options = self.worker_options
        if self.listen_socket is not None:
            pass_fds.append(self.listen_socket.fileno())
        options = WorkerOptions(**{**options.__dict__, "status_fd": write_fd})
        env = dict(os.environ)
        env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
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
                if slot.process is not None and slot.process.pid == pid:
                    slot.status = json.loads(line)
        finally:
            transport.close()

    async def _watch(self, slot: WorkerSlot) -> None:
        """Wait for the worker in ``slot`` to exit and replace it unless stopping."""
        while True:
            assert slot.process is not None
            code = await slot.process.wait()
            pid = slot.process.pid
            self._mark_dead(pid)
            if self.stopping:
                return
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            logger.error(
                "worker %d (pid %d) died with %s; starting a replacement", slot.index, pid, how
            )
            slot.restarts += 1
            quick = time.monotonic() - slot.started_at < 1.0
            if quick:
                await asyncio.sleep(min(RESTART_BACKOFF_MAX, 0.2 * 2 ** min(slot.restarts, 6)))
            if self.stopping:
                return
            await self._spawn(slot)

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
            except BrokerNotFound as exc:
                logger.error("%s; retrying", exc)
                await asyncio.sleep(min(RESTART_BACKOFF_MAX, 0.5 * 2**failures))

    def _mark_dead(self, pid: int) -> None:
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.metrics_dir)
        except Exception:  # metrics must never stop a restart
            logger.debug("could not mark metrics of pid %d dead", pid, exc_info=True)

    # Life ----------------------------------------------------------------------------

    def _prepare_listener(self) -> None:
        if self.bind.is_unix:
            self.listen_socket = unix_socket(self.bind)
            self.listen_socket.set_inheritable(True)
        else:
            # Bound but not listening: reserves the port and reports errors early; each
            # worker listens on its own SO_REUSEPORT socket.
            self.listen_socket = None
            self._port_guard = tcp_socket(self.bind, listen=False)

    async def run(self) -> int:
        from django_ws_client.transport import layer_config

        options = self.options
        # Signals first: a SIGTERM while brokers are still being awaited must stop us
        # at once, not after the whole grace period.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        config = layer_config(options.alias)
        setting = f"WEBSOCKET_TRANSPORT_BACKENDS['{options.alias}']['CONFIG']"
        self._prepare_listener()
        self.metrics_dir = tempfile.mkdtemp(prefix="django-ws-metrics-")
        try:
            finding = loop.create_task(ensure_brokers(config, setting, options.embedded_broker))
            stopped = loop.create_task(stop.wait())
            await asyncio.wait({finding, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not finding.done():
                finding.cancel()
                logger.info("stopped while waiting for the brokers")
                return 0
            stopped.cancel()
            self.broker = finding.result()
            self.worker_options = worker_options_from_settings(
                str(self.bind), options.alias, options.grace_seconds
            )
            if self.listen_socket is not None:
                self.worker_options = WorkerOptions(
                    **{**self.worker_options.__dict__, "inherited_fd": self.listen_socket.fileno()}
                )
            if options.health_bind:
                health = parse_bind(options.health_bind)
                self.probes = ProbeServer(self.readiness, self.metrics_dir)
                await self.probes.start(health.host, health.port)
                logger.info("probes and metrics on http://%s:%d/", health.host, self.probes.port)
            for slot in self.slots:
                await self._spawn(slot)
            watchers = [loop.create_task(self._watch(slot)) for slot in self.slots]
            if self.broker is not None:
                watchers.append(loop.create_task(self._watch_broker(self.broker, config)))
            logger.info("serving websockets on %s with %d workers", self.bind, len(self.slots))
            await stop.wait()
            await self._shutdown(watchers)
            return 0
        finally:
            if self.broker is not None:
                self.broker.stop()
            if self.probes is not None:
                await self.probes.close()
            if self.bind.is_unix and self.listen_socket is not None:
                self.listen_socket.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.bind.path)
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


def run(options: ServerOptions) -> int:
    """Run the server until SIGTERM/SIGINT; returns the process exit code."""
    return asyncio.run(Supervisor(options).run())
