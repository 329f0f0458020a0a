"""Consumers that misbehave: each failure stays with its own connection."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support.processes import EdgeServer, Stack, wait_until

pytestmark = pytest.mark.timeout(90)


async def echo_works(server: EdgeServer) -> None:
    async with connect(f"{server.ws_url}/ws/echo/") as ws:
        await ws.send("ok")
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["echo"] == "ok"


async def test_raising_in_a_group_handler_closes_1011(stack: Stack) -> None:
    server = stack.edge(workers=1)
    async with connect(f"{server.ws_url}/ws/faulty/handler/") as ws:
        await ws.send("trigger")
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1011
    wait_until(lambda: "boom from a group handler" in server.log(), 5, "the traceback")
    assert "FaultyConsumer has" not in server.log()  # it had a handler; the handler raised
    await echo_works(server)


async def test_raising_in_disconnect_is_logged_and_contained(stack: Stack) -> None:
    server = stack.edge(workers=1)
    async with connect(f"{server.ws_url}/ws/faulty/disconnect/") as ws:
        await ws.send("hi")
        await ws.recv()
    wait_until(lambda: "boom from disconnect" in server.log(), 5, "the disconnect traceback")
    assert any(line.startswith("disconnect faulty disconnect 1000") for line in server.events())
    await echo_works(server)


async def test_a_consumer_blocking_the_loop_is_named_in_a_warning(stack: Stack) -> None:
    server = stack.edge(workers=1, env={"TEST_BLOCKED_LOOP_WARNING": "0.2"})
    async with connect(f"{server.ws_url}/ws/faulty/block/") as ws:
        await ws.send("0.8")
        assert await asyncio.wait_for(ws.recv(), 5) == "unblocked"
    wait_until(lambda: "the event loop has been blocked" in server.log(), 5, "the watchdog warning")
    line = next(
        line for line in server.log().splitlines() if "the event loop has been blocked" in line
    )
    print(f"\n{line.split(' WARNING ', 1)[1]}")
    assert "FaultyConsumer on ws." in line and "'websocket.receive'" in line
    assert "django_ws_edge_loop_blocked_total 1.0" in server.metrics()
    await echo_works(server)


async def test_a_consumer_that_never_accepts_times_out_the_handshake(stack: Stack) -> None:
    server = stack.edge(workers=1, env={"TEST_HANDSHAKE_TIMEOUT": "1"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises((InvalidStatus, OSError, asyncio.TimeoutError, EOFError, Exception)):
        await connect(f"{server.ws_url}/ws/faulty/never_accept/", open_timeout=5)
    elapsed = loop.time() - started
    print(f"\nhandshake abandoned after {elapsed:.2f}s (HANDSHAKE_TIMEOUT 1s)")
    assert elapsed < 3
    # The consumer's connect() was cancelled: nothing of it is left running.
    wait_until(lambda: "connect cancelled" in server.events(), 5, "connect() to be cancelled")
    await echo_works(server)
