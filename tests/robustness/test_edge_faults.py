"""Faults under traffic: a broker killed and restarted, a worker stopped, the whole
server stopped. Clients see 1001 where they must go, nothing else is interrupted, every
accepted connection's disconnect() runs, and no process is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time

import psutil
import pytest
from websockets.asyncio.client import ClientConnection

from support.clients import join, on_distinct_workers
from support.processes import EdgeServer, Stack, none_running, process_tree, wait_until

pytestmark = pytest.mark.timeout(120)


class Traffic:
    """Clients in groups, one sender per group sending every 20 ms; records arrivals."""

    def __init__(self) -> None:
        self.arrivals: dict[int, list[float]] = {}
        self.closed: dict[int, int | None] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.running = True

    def listen(self, ws: ClientConnection) -> None:
        key = id(ws)
        self.arrivals[key] = []

        async def run() -> None:
            try:
                while True:
                    message = json.loads(await ws.recv())
                    if "text" in message:
                        self.arrivals[key].append(time.monotonic())
            except Exception:
                self.closed[key] = ws.close_code

        self.tasks.append(asyncio.create_task(run()))

    def send(self, ws: ClientConnection) -> None:
        async def run() -> None:
            seq = 0
            while self.running:
                with contextlib.suppress(Exception):
                    await ws.send(json.dumps({"text": str(seq)}))
                seq += 1
                await asyncio.sleep(0.02)

        self.tasks.append(asyncio.create_task(run()))

    async def stop(self) -> None:
        self.running = False
        await asyncio.sleep(0.1)
        for task in self.tasks:
            task.cancel()


async def start_traffic(
    server: EdgeServer, groups: int = 4, members: int = 3
) -> tuple[Traffic, list[ClientConnection]]:
    traffic = Traffic()
    clients = []
    for g in range(groups):
        for m in range(members):
            ws, _ = await join(f"{server.ws_url}/ws/group/load{g}/")
            clients.append(ws)
            traffic.listen(ws)
            if m == 0:
                traffic.send(ws)
    return traffic, clients


def children(server: EdgeServer) -> list[psutil.Process]:
    return psutil.Process(server.pid).children(recursive=True)


def brokers_of(server: EdgeServer) -> list[psutil.Process]:
    found = []
    for process in children(server):
        with contextlib.suppress(psutil.Error):  # zombies and processes gone meanwhile
            if "django_ws_broker" in " ".join(process.cmdline()):
                found.append(process)
    return found


async def test_embedded_broker_killed_under_traffic_is_restarted(stack: Stack, tmp_path) -> None:
    server = stack.edge(workers=2, broker=f"unix:{tmp_path / 'embedded.sock'}")
    traffic, clients = await start_traffic(server)
    await asyncio.sleep(0.5)
    (broker,) = brokers_of(server)
    killed_at = time.monotonic()
    broker.kill()
    await asyncio.to_thread(
        wait_until,
        lambda: any(p.pid != broker.pid for p in brokers_of(server)),
        10,
        "the supervisor to restart the embedded broker",
    )
    await asyncio.to_thread(
        wait_until, lambda: server.readyz()[0] == 200, 10, "the server to be ready again"
    )
    await asyncio.sleep(1.0)
    await traffic.stop()
    gaps = []
    for times in traffic.arrivals.values():
        before = [t for t in times if t < killed_at]
        after = [t for t in times if t > killed_at]
        assert after, "a member never received again"
        gaps.append(after[0] - (before[-1] if before else killed_at))
    print(
        f"\nembedded broker SIGKILLed: restarted; delivery gap max {max(gaps):.2f}s over {len(gaps)} members"
    )
    assert max(gaps) < 5
    assert not traffic.closed  # no client was disconnected
    assert "died with code -9; restarting it" in server.log()
    for ws in clients:
        await ws.close()


async def test_worker_stopped_under_traffic_closes_its_clients_with_1001(stack: Stack) -> None:
    server = stack.edge(workers=2)
    (a, _), (b, hello_b) = await on_distinct_workers(f"{server.ws_url}/ws/group/load0/")
    traffic, clients = await start_traffic(server)
    traffic.listen(a)
    traffic.listen(b)
    await asyncio.sleep(0.3)
    victim = int(hello_b["pid"])
    os.kill(victim, signal.SIGTERM)
    await asyncio.to_thread(
        wait_until,
        lambda: victim not in server.worker_pids() and server.readyz()[0] == 200,
        20,
        "a replacement",
    )
    await asyncio.sleep(0.5)
    await traffic.stop()
    assert traffic.closed[id(b)] == 1001
    assert id(a) not in traffic.closed
    on_victim = [f"disconnect {hello_b['channel']} 1001"]
    assert all(line in server.events() for line in on_victim)
    closed_codes = set(traffic.closed.values())
    print(
        f"\nworker {victim} stopped: {len(traffic.closed)} of {len(clients) + 2} clients closed, codes {closed_codes}"
    )
    assert closed_codes == {1001}
    for ws in [*clients, a]:
        await ws.close()


async def test_whole_server_sigterm_under_traffic(stack: Stack) -> None:
    server = stack.edge(workers=2)
    traffic, clients = await start_traffic(server, groups=5, members=4)
    await asyncio.sleep(0.5)
    tree = process_tree(server.pid)
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait, 30) == 0
    await asyncio.sleep(0.2)
    await traffic.stop()
    codes = set(traffic.closed.values())
    disconnects = [line for line in server.events() if line.startswith("disconnect ws.")]
    print(
        f"\nSIGTERM under traffic: {len(clients)} clients closed with {codes}, {len(disconnects)} disconnect() calls"
    )
    assert codes == {1001} and len(traffic.closed) == len(clients)
    assert len(disconnects) == len(clients) and all(line.endswith(" 1001") for line in disconnects)
    await asyncio.to_thread(wait_until, lambda: none_running(tree), 10, "every process to exit")
