"""The supervisor's HTTP probe and metrics endpoint, on its own port.

``/healthz``: the supervisor is alive. ``/readyz``: every worker is listening with all
its broker links up and sending heartbeats, and the server is not draining (Kubernetes
stops sending traffic otherwise). ``/metrics``: the workers' metrics merged (prometheus
multiprocess mode), and the supervisor's own.
Kept to plain asyncio streams: three fixed paths do not need a web framework.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.registry import Collector

logger = logging.getLogger("django_ws.edge")

MAX_REQUEST_BYTES = 8192


class ProbeServer:
    def __init__(
        self,
        readiness: Callable[[], tuple[bool, dict[str, object]]],
        metrics_dir: str,
        own_metrics: Collector | None = None,
    ) -> None:
        self.readiness = readiness
        self.metrics_dir = metrics_dir
        self.own_metrics = own_metrics  # the supervisor's figures, not in the workers' files
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, host, port)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def _metrics(self) -> bytes:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.metrics_dir)
        if self.own_metrics is not None:
            registry.register(self.own_metrics)
        return generate_latest(registry)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0].decode("latin-1")
            if method not in (b"GET", b"HEAD"):
                status, body, ctype = 405, b"method not allowed\n", "text/plain"
            elif path == "/healthz":
                status, body, ctype = 200, b"ok\n", "text/plain"
            elif path == "/readyz":
                ready, detail = self.readiness()
                status = 200 if ready else 503
                body, ctype = json.dumps(detail).encode() + b"\n", "application/json"
            elif path == "/metrics":
                body = await asyncio.get_running_loop().run_in_executor(None, self._metrics)
                status, ctype = 200, CONTENT_TYPE_LATEST
            else:
                status, body, ctype = 404, b"not found\n", "text/plain"
            reason = {
                200: "OK",
                404: "Not Found",
                405: "Method Not Allowed",
                503: "Service Unavailable",
            }[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass
        except Exception:
            logger.exception("probe request failed")
        finally:
            writer.close()
