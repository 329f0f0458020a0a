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
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger("django_ws.edge")

MAX_REQUEST_BYTES = 8192


class MetricsCounts(Collector):
    """Counts about the metrics machinery itself, kept in the supervisor's memory:
    they must show even when the workers' metrics directory is what failed."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self.counts()
        yield CounterMetricFamily(
            "django_ws_edge_metrics_degraded",
            "Metric values kept in a worker's memory because the metrics directory could "
            "not take them (full or read-only): missing from this page.",
            value=counts.get("degraded", 0),
        )
        yield CounterMetricFamily(
            "django_ws_edge_metrics_lost",
            "Counter and histogram values of dead workers that could not be kept in the totals.",
            value=counts.get("lost", 0),
        )
        yield CounterMetricFamily(
            "django_ws_edge_metrics_scrape_errors",
            "Scrapes whose workers' metrics could not be read; they showed only the "
            "supervisor's own.",
            value=counts.get("scrape_errors", 0),
        )


class ProbeServer:
    def __init__(
        self,
        readiness: Callable[[], tuple[bool, dict[str, object]]],
        metrics_dir: str,
        own_metrics: Collector | None = None,
        metrics_counts: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.readiness = readiness
        self.metrics_dir = metrics_dir
        self.own_metrics = own_metrics  # the supervisor's figures, not in the workers' files
        self.scrape_errors = 0
        self._metrics_counts = metrics_counts or dict
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

    def _counts(self) -> dict[str, int]:
        return {**self._metrics_counts(), "scrape_errors": self.scrape_errors}

    def _metrics(self) -> bytes:
        own = CollectorRegistry()
        if self.own_metrics is not None:
            own.register(self.own_metrics)
        own.register(MetricsCounts(self._counts))
        if not self.metrics_dir:
            return generate_latest(own)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.metrics_dir)
        try:
            workers = generate_latest(registry)
        except Exception:  # a damaged file must not take the supervisor's figures with it
            self.scrape_errors += 1
            logger.exception("metrics: cannot read the workers' metrics in %s", self.metrics_dir)
            workers = b""
        return workers + generate_latest(own)

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
