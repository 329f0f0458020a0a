"""Connection storm: thousands of websocket connections opened as fast as one asyncio
client can against ``websockets_server -w 2``. Every attempt is accepted, or refused
with HTTP 503 at the configured connection limit; nothing crashes, nothing hangs, and
once the clients leave the server holds no more connections or files than before.

``STORM_CONNECTIONS`` changes the count (default 5,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from support.processes import EdgeServer, Stack
from support.resources import MIB, fd_count, fd_limit, raise_fd_limit, rss, scrape, total, tree_pids

STORM = int(os.environ.get("STORM_CONNECTIONS", "5000"))
IN_FLIGHT = 1000
"""Handshakes the client keeps in flight at once: beyond this the client itself, not
the server, is the bottleneck (and the listen backlog of 2048 would overflow)."""

pytestmark = pytest.mark.timeout(120)


class PeakMemory:
    """Samples the RSS of a set of processes in a thread, keeping each one's peak."""

    def __init__(self, pids: list[int], interval: float = 0.2) -> None:
        self.pids = pids
        self.interval = interval
        self.peaks: dict[int, int] = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.peaks[pid] = max(self.peaks[pid], rss(pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class StormResult:
    accepted: list[ClientConnection] = field(default_factory=list)
    refused_503: int = 0
    other: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


async def storm(url: str, count: int) -> StormResult:
    result = StormResult()
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def attempt() -> None:
        async with gate:
            try:
                ws = await connect(url, open_timeout=30, ping_interval=None, close_timeout=5)
            except InvalidStatus as exc:
                if exc.response.status_code == 503:
                    result.refused_503 += 1
                else:
                    result.other[f"HTTP {exc.response.status_code}"] += 1
            except Exception as exc:
                result.other[type(exc).__name__] += 1
            else:
                result.accepted.append(ws)

    started = time.monotonic()
    await asyncio.gather(*(attempt() for _ in range(count)))
    result.seconds = time.monotonic() - started
    return result


async def run_storm(stack: Stack, limit: int | None) -> tuple[StormResult, EdgeServer]:
    client_limit = raise_fd_limit(STORM + 1000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    env = {"TEST_MAX_CONNECTIONS": str(limit)} if limit else {}
    broker = stack.broker()
    edge = stack.edge(workers=2, broker=broker.listen, env=env)
    workers = edge.worker_pids()
    assert len(workers) == 2
    processes = tree_pids(edge.pid)
    fds_before = {pid: fd_count(pid) for pid in workers}
    server_limit = fd_limit(workers[0])
    print(
        f"\nopen-files limit: test process {client_limit} (soft {soft}, hard {hard}), "
        f"edge workers {server_limit}"
    )
    # Each accepted connection is one file in a worker; the limit must leave room.
    assert server_limit > STORM // 2 + 200 or limit

    with PeakMemory([*processes, broker.pid]) as peaks:
        result = await storm(f"{edge.ws_url}/ws/echo/", STORM)
        # The connections that were accepted work.
        for ws in result.accepted[:: max(1, len(result.accepted) // 50)]:
            await ws.send("alive?")
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["echo"] == "alive?"
        await asyncio.gather(*(ws.close() for ws in result.accepted))
    peak_edge = sum(peaks.peaks[pid] for pid in processes)
    print(
        f"storm of {STORM} against -w 2 (limit {limit or 'default'} per worker): "
        f"{len(result.accepted)} accepted, {result.refused_503} refused 503, "
        f"other {dict(result.other) or 0}, in {result.seconds:.1f}s "
        f"({STORM / result.seconds:.0f}/s); peak RSS: workers "
        + ", ".join(f"{peaks.peaks[pid] / MIB:.0f}" for pid in workers)
        + f" MiB, edge total {peak_edge / MIB:.0f} MiB, broker {peaks.peaks[broker.pid] / MIB:.0f} MiB"
    )

    # Nothing crashed, nothing is left behind.
    assert edge.alive() and edge.worker_pids() == workers, "a worker died"
    assert edge.readyz()[0] == 200
    metrics_url = f"http://127.0.0.1:{edge.health_port}/metrics"
    deadline = time.monotonic() + 20
    while total(scrape(metrics_url), "django_ws_edge_connections_open") > 0:
        assert time.monotonic() < deadline, "connections still counted open"
        await asyncio.sleep(0.2)
    fds_after = {pid: fd_count(pid) for pid in workers}
    print(f"worker open files before {fds_before}, after the clients left {fds_after}")
    for pid in workers:
        assert fds_after[pid] <= fds_before[pid] + 10
    return result, edge


async def test_storm_of_connections_is_all_accepted_under_the_default_limit(stack: Stack) -> None:
    result, _ = await run_storm(stack, None)
    assert len(result.accepted) == STORM
    assert result.refused_503 == 0 and not result.other


async def test_storm_past_the_connection_limit_is_refused_with_503(stack: Stack) -> None:
    limit = STORM // 5  # per worker: two workers hold 2/5 of the storm, the rest is refused
    result, edge = await run_storm(stack, limit)
    assert not result.other, result.other
    assert len(result.accepted) + result.refused_503 == STORM
    assert result.refused_503 > 0
    samples = scrape(f"http://127.0.0.1:{edge.health_port}/metrics")
    assert total(samples, "django_ws_edge_handshakes_rejected_total", status="503") == (
        result.refused_503
    )
    # Each worker holds at most its limit: connections count from the start of their
    # handshake, so simultaneous handshakes cannot overshoot it.
    assert len(result.accepted) <= 2 * limit
