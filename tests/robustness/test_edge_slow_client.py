"""A client that never reads: it is closed, counted, and never slows its group."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import pytest
from websockets.asyncio.client import ClientConnection

from support import rawws
from support.clients import join
from support.processes import Stack, wait_until

pytestmark = pytest.mark.timeout(120)

MEMBERS = 99
MESSAGES = 400
RATE = 100  # messages per second into the group: 9,900 deliveries per second
PAYLOAD = "x" * 1000


async def run_round(
    sender: ClientConnection, readers: list[ClientConnection], label: str
) -> tuple[float, float]:
    """Send MESSAGES at RATE; return (deliveries per second, p99 latency in ms)."""
    latencies: list[float] = []

    async def drain(ws: ClientConnection) -> None:
        got = 0
        while got < MESSAGES:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            kind, _, sent_at, _ = message["text"].split(":", 3)
            if kind == label:
                latencies.append(time.time() - float(sent_at))
                got += 1

    started = time.monotonic()
    receiving = [asyncio.create_task(drain(ws)) for ws in readers]
    for seq in range(MESSAGES):
        await sender.send(json.dumps({"text": f"{label}:{seq}:{time.time()}:{PAYLOAD}"}))
        await asyncio.sleep(max(0.0, started + (seq + 1) / RATE - time.monotonic()))
    await asyncio.gather(*receiving)
    elapsed = time.monotonic() - started
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    return len(latencies) / elapsed, p99


async def test_a_stalled_member_is_closed_and_does_not_slow_the_other_99(stack: Stack) -> None:
    server = stack.edge(
        workers=1,
        env={
            "TEST_SOCKET_SEND_BUFFER": "16384",
            "TEST_CLOSE_TIMEOUT": "1",
            "TEST_SLOW_CLIENT_SECONDS": "1",
        },
    )
    host, port = server.bind.rsplit(":", 1)
    readers = [(await join(f"{server.ws_url}/ws/group/crowd/"))[0] for _ in range(MEMBERS)]
    sender = readers[0]
    alone_rate, alone_p99 = await run_round(sender, readers, "alone")

    stalled = rawws.open_websocket((host, int(port)), "/ws/group/crowd/", rcvbuf=4096)
    try:
        stalled_rate, stalled_p99 = await run_round(sender, readers, "stalled")
        await asyncio.to_thread(
            wait_until,
            lambda: "django_ws_edge_slow_consumers_closed_total 1.0" in server.metrics(),
            15,
            "the stalled member to be closed as too slow",
        )
    finally:
        stalled.close()
    print(
        f"\n{MEMBERS} members, {MESSAGES} messages of 1 KB at {RATE}/s: "
        f"{alone_rate:,.0f} deliveries/s (p99 {alone_p99:.0f} ms) without a stalled member, "
        f"{stalled_rate:,.0f} deliveries/s (p99 {stalled_p99:.0f} ms) with one that never reads"
    )
    assert "as too slow: a send made no progress for 1s (SLOW_CLIENT_SECONDS)" in server.log()
    # Every message reached every reader both times (run_round counts them), at the
    # offered rate, with latency of the same order.
    assert stalled_rate > 0.8 * alone_rate
    assert stalled_p99 < 2 * alone_p99 + 100
    for ws in readers:
        await ws.close()
