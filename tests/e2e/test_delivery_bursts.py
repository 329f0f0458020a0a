"""Bursts are not slowness: only a client that does not read is closed."""

from __future__ import annotations

import asyncio
import json
import re
import threading

import psutil
import pytest
from websockets.asyncio.client import ClientConnection

from support import rawws
from support.clients import join
from support.processes import Stack, wait_until

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

PAYLOAD = "x" * 1024


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "")
    found = re.search(pattern + r" (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


class PeakRss:
    """Samples a process's resident memory in a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.start = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


async def read_texts(ws: ClientConnection, count: int) -> list[str]:
    texts = []
    while len(texts) < count:
        message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        texts.append(message["text"])
    return texts


async def test_a_burst_reaches_every_reader_and_only_the_stalled_member_is_closed(
    stack: Stack,
) -> None:
    server = stack.edge(
        workers=1,
        env={
            "TEST_SOCKET_SEND_BUFFER": "16384",
            "TEST_SLOW_CLIENT_SECONDS": "2",
            "TEST_CLOSE_TIMEOUT": "1",
        },
    )
    host, port = server.bind.rsplit(":", 1)
    url = f"{server.ws_url}/ws/room/burst/"
    readers = [await join(url) for _ in range(3)]
    pid = readers[0][1]["pid"]
    stalled = rawws.open_websocket((host, int(port)), "/ws/room/burst/", rcvbuf=4096)
    rss = PeakRss(pid)
    try:
        count = 10_000
        receiving = [asyncio.create_task(read_texts(ws, count)) for ws, _ in readers]
        sender = readers[0][0]
        for seq in range(count):
            await sender.send(f"{seq}:{PAYLOAD}")
        received = await asyncio.gather(*receiving)
        await asyncio.to_thread(
            wait_until,
            lambda: metric(server.metrics(), "django_ws_edge_slow_consumers_closed_total") == 1,
            20,
            "the member that never reads to be closed as too slow",
        )
    finally:
        peak = rss.stop()
        stalled.close()
    expected = [f"{seq}:{PAYLOAD}" for seq in range(count)]
    for texts in received:
        assert texts == expected  # every message, in order, to every reader
    metrics = server.metrics()
    lost = metric(metrics, "django_ws_edge_deliveries_lost_total", reason="slow_client")
    closed = metric(metrics, "django_ws_edge_slow_consumers_closed_total")
    bound = 200 * 1024 * 1024
    print(
        f"\none member sent {count:,} x 1 KiB into a room of 3 readers and 1 that never reads: "
        f"each reader got {count:,} of {count:,} in order, none closed; "
        f"the stalled member closed ({closed:.0f}), {lost:.0f} events dropped with it; "
        f"worker RSS {rss.start / 2**20:.0f} -> peak {peak / 2**20:.0f} MiB (bound {bound / 2**20:.0f} MiB)"
    )
    assert closed == 1
    assert lost > 0
    assert peak < bound
    for ws, _ in readers:
        assert ws.close_code is None  # still open
        await ws.close()


async def test_four_hundred_members_sending_at_once_close_nobody(stack: Stack) -> None:
    server = stack.edge(workers=1)
    members = 400
    url = f"{server.ws_url}/ws/room/crowd/"
    clients = [(await join(url))[0] for _ in range(members)]
    receiving = [asyncio.create_task(read_texts(ws, members)) for ws in clients]
    await asyncio.gather(*(ws.send(f"from {i}") for i, ws in enumerate(clients)))
    received = await asyncio.gather(*receiving)
    deliveries = sum(len(texts) for texts in received)
    everyone = {f"from {i}" for i in range(members)}
    assert all(set(texts) == everyone for texts in received)
    metrics = server.metrics()
    closed = metric(metrics, "django_ws_edge_slow_consumers_closed_total")
    print(
        f"\n{members} members of one room each sent one message at once: "
        f"{deliveries:,} of {members * members:,} deliveries made, {closed:.0f} members closed"
    )
    assert deliveries == members * members
    assert closed == 0
    for ws in clients:
        assert ws.close_code is None
        await ws.close()
