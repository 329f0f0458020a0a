"""A wedged worker is noticed: a stopped process or a blocked event loop stops its
heartbeats, ``/readyz`` turns 503, the worker is killed and replaced, and the shared
listening socket leaves new handshakes to the other workers meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from support.clients import join
from support.processes import EdgeServer, Stack, none_running, wait_until

pytestmark = pytest.mark.timeout(120)

HEARTBEAT_TIMEOUT = 5.0  # the defaults: the test runs the server as shipped
WEDGED_TIMEOUT = 10.0


async def _handshake(server: EdgeServer, timeout: float) -> int | None:
    """One handshake and greeting; the pid of the worker that served it, or None."""
    try:
        async with asyncio.timeout(timeout):
            ws, hello = await join(f"{server.ws_url}/ws/group/probe/", open_timeout=timeout)
            await ws.close()
            return int(hello["pid"])
    except Exception:
        return None


async def test_a_stopped_worker_turns_readyz_503_is_replaced_and_others_serve(
    stack: Stack, tmp_path: Path
) -> None:
    server = stack.edge(workers=2, broker=f"unix:{tmp_path / 'broker.sock'}")
    wait_until(lambda: len(server.worker_pids()) == 2, 10, "two workers")
    victim, other = server.worker_pids()
    served: list[int | None] = []
    first_503: float | None = None
    killed_at: float | None = None
    ready_at: float | None = None
    os.kill(victim, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        while time.monotonic() - stopped < 12.0:
            status, detail = await asyncio.to_thread(server.readyz)
            now = time.monotonic() - stopped
            if status == 503 and first_503 is None:
                first_503 = now
            if killed_at is None and none_running([victim]):
                killed_at = now
            if killed_at is not None and ready_at is None and status == 200:
                ready_at = now
            served.append(await _handshake(server, 3.0))
            await asyncio.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)
    detail = server.wait_ready(20)
    ready_at = ready_at or time.monotonic() - stopped
    replacement = ({int(w["pid"]) for w in detail["workers"]} - {other}).pop()  # type: ignore[union-attr]
    after = [await _handshake(server, 3.0) for _ in range(20)]
    log = server.log()
    assert first_503 is not None and killed_at is not None
    print(
        f"\nworker {victim} SIGSTOPped for 12 s: /readyz 503 after {first_503:.2f}s "
        f"(heartbeat timeout {HEARTBEAT_TIMEOUT:.0f}s); killed after {killed_at:.2f}s (wedged "
        f"timeout {WEDGED_TIMEOUT:.0f}s); replacement pid {replacement}, /readyz 200 again "
        f"after {ready_at:.2f}s; handshakes during the stop: "
        f"{sum(p is not None for p in served)} of {len(served)} served; after: "
        f"{sum(p is not None for p in after)} of {len(after)}"
    )
    assert first_503 <= HEARTBEAT_TIMEOUT + 1.0
    assert WEDGED_TIMEOUT - 1.0 <= killed_at <= WEDGED_TIMEOUT + 1.0
    assert replacement != victim
    assert None not in served and victim not in served, served
    assert set(served) <= {other, replacement}, served
    assert all(pid in (other, replacement) for pid in after), after
    assert f"worker 0 (pid {victim}) sent no heartbeat" in log or (
        f"worker 1 (pid {victim}) sent no heartbeat" in log
    )
    assert "/readyz reports not ready" in log and "killing it (SIGKILL)" in log
    assert "the consumer running is unknown" in log
    replaced = [m for m in server.metrics().splitlines() if "workers_replaced_total{" in m]
    print(replaced)
    assert 'django_ws_edge_workers_replaced_total{reason="wedged"} 1.0' in replaced
    assert 'django_ws_edge_workers_replaced_total{reason="died"} 0.0' in replaced


async def test_a_worker_blocked_by_a_consumer_is_replaced_naming_the_consumer(
    stack: Stack, tmp_path: Path
) -> None:
    server = stack.edge(
        workers=2,
        broker=f"unix:{tmp_path / 'broker.sock'}",
        extra_args=("--heartbeat-timeout", "1", "--wedged-timeout", "3"),
    )
    ws = await connect(f"{server.ws_url}/ws/faulty/block/")
    await ws.send("60")  # blocks its worker's loop for a minute
    started = time.monotonic()
    wait_until(lambda: "killing it (SIGKILL)" in server.log(), 10, "the blocked worker killed")
    killed_after = time.monotonic() - started
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.wait_closed(), 5)
    detail = server.wait_ready(20)
    line = next(line for line in server.log().splitlines() if "killing it (SIGKILL)" in line)
    print(f"\nblocked worker killed {killed_after:.1f}s after the block began: {line}")
    assert "the event loop was blocked by FaultyConsumer" in line
    assert "handling 'websocket.receive'" in line
    assert ws.close_code is None or ws.close_code == 1006
    assert len(detail["workers"]) == 2  # type: ignore[arg-type]
    # 3 s after the last heartbeat, which came up to one interval (0.25 s) before the block
    assert 2.5 <= killed_after <= 6.0
    async with connect(f"{server.ws_url}/ws/group/after/") as again:
        assert "pid" in json.loads(await again.recv())
