"""A reconnecting client catches up from its position, or is told it cannot."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from support.clients import join
from support.processes import TEST_PROJECT, Stack, base_env, free_port, wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def next_json(ws: ClientConnection, timeout: float = 20) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def read_until(ws: ClientConnection, last_text: str) -> list[dict[str, Any]]:
    """Messages up to and including the one whose text is ``last_text``."""
    messages = []
    while True:
        message = await next_json(ws)
        messages.append(message)
        if message.get("text") == last_text:
            return messages


async def test_a_client_cut_off_gets_exactly_what_it_missed_then_live_ones(stack: Stack) -> None:
    broker = stack.broker(None, "--history-size", "600")
    server = stack.edge(workers=2, broker=broker.listen)
    url = f"{server.ws_url}/ws/room/recover/"
    sender, _ = await join(url)
    listener, _ = await join(url)
    await sender.send("before")
    for ws in (sender, listener):
        assert (await next_json(ws))["text"] == "before"
    # The listener's position is the one of the last message it got.
    await sender.send("marker")
    await next_json(sender)
    marker = await next_json(listener)
    position = marker["position"]
    # Cut the listener's TCP connection: no close handshake.
    listener.transport.abort()
    for seq in range(500):
        await sender.send(f"missed {seq}")
    await read_until(sender, "missed 499")
    again, _ = await join(f"{url}?since={position}")
    caught_up = [(await next_json(again))["text"] for _ in range(500)]
    await sender.send("live")
    live = await next_json(again)
    print(
        f"\ncut off at position {position}; 500 messages sent meanwhile; reconnected with it: "
        f"got {len(caught_up)} ({caught_up[0]!r} .. {caught_up[-1]!r}), then {live['text']!r} "
        f"at {live['position']}"
    )
    assert caught_up == [f"missed {seq}" for seq in range(500)]
    assert live["text"] == "live"
    epoch, offset = position.split(".")
    assert live["position"] == f"{epoch}.{int(offset) + 501}"  # no gap, no duplicate

    # From a position older than the history kept (600 messages): the gap event.
    for seq in range(700):
        await sender.send(f"flood {seq}")
    await read_until(sender, "flood 699")
    trimmed, _ = await join(f"{url}?since={position}")
    gap = await next_json(trimmed)
    print(f"from a position 1,200 messages back with 600 kept: {gap}")
    assert gap["gap"] == "too_old"
    # ...and live messages follow the gap event, positioned in the same epoch.
    await sender.send("after the gap")
    assert (await next_json(trimmed))["text"] == "after the gap"

    # A position from before a broker SIGKILL: the broker lost the history.
    broker.signal(signal.SIGKILL)
    broker.wait(5)
    restarted = stack.broker(broker.listen, "--history-size", "600", name="broker-restarted")
    await asyncio.to_thread(wait_until, lambda: server.readyz()[0] == 200, 15, "the edge to relink")
    after_kill, _ = await join(f"{url}?since={position}")
    gap = await next_json(after_kill)
    print(f"from a position before the broker was killed: {gap}")
    assert gap["gap"] == "history_lost"
    for ws in (sender, again, trimmed, after_kill):
        await ws.close()
    restarted.stop()


async def test_the_embedded_broker_keeps_the_history_its_config_asks_for(stack: Stack) -> None:
    # No separate broker: CONFIG["history_size"] reaches the embedded one as its flag.
    server = stack.edge(workers=1, env={"TEST_HISTORY_SIZE": "3"})
    url = f"{server.ws_url}/ws/room/short/"
    sender, _ = await join(url)
    positions = []
    for seq in range(6):
        await sender.send(f"m {seq}")
        positions.append((await next_json(sender))["position"])
    within, _ = await join(f"{url}?since={positions[2]}")
    caught_up = [(await next_json(within))["text"] for _ in range(3)]
    beyond, _ = await join(f"{url}?since={positions[1]}")
    gap = await next_json(beyond)
    print(f"\n3 kept of 6: from m 2 got {caught_up}; from m 1: {gap}")
    assert caught_up == ["m 3", "m 4", "m 5"]
    assert gap["gap"] == "too_old"
    for ws in (sender, within, beyond):
        await ws.close()


async def test_a_garbage_position_from_a_client_gives_the_gap_event(stack: Stack) -> None:
    server = stack.edge(workers=1)
    ws, _ = await join(f"{server.ws_url}/ws/room/garbage/?since=not-a-position")
    gap = await next_json(ws)
    assert gap["gap"] == "history_lost"
    await ws.close()


PUBLISHER = """
import time, django
django.setup()
from asgiref.sync import async_to_sync
from django_ws_client.transport import get_channel_layer
started = time.monotonic()
try:
    async_to_sync(get_channel_layer().group_send)(
        "outage", {"type": "room.message", "text": "from a view"}
    )
    print(f"sent after {time.monotonic() - started:.1f}s", flush=True)
except Exception as exc:
    print(f"{type(exc).__name__} after {time.monotonic() - started:.1f}s: {exc}", flush=True)
"""


def start_publisher(address: str, publish_timeout: float) -> subprocess.Popen[str]:
    """A plain Django process (no websocket server) that publishes once."""
    return subprocess.Popen(
        [sys.executable, "-c", PUBLISHER],
        cwd=TEST_PROJECT,
        env=base_env(
            DJANGO_SETTINGS_MODULE="testproject.settings",
            TEST_BROKER=address,
            TEST_PUBLISH_TIMEOUT=str(publish_timeout),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_a_plain_django_process_publish_waits_out_a_broker_restart(stack: Stack) -> None:
    address = f"127.0.0.1:{free_port()}"
    broker = stack.broker(address)
    server = stack.edge(workers=1, broker=address)
    member, _ = await join(f"{server.ws_url}/ws/room/outage/")
    broker.signal(signal.SIGKILL)
    broker.wait(5)
    publisher = start_publisher(address, 20)
    try:
        await asyncio.sleep(2)
        assert publisher.poll() is None  # waiting for the broker, not failed
        stack.broker(address, name="broker-restarted")
        output, _ = await asyncio.to_thread(publisher.communicate, timeout=30)
    finally:
        publisher.kill()
    # The edge re-subscribes when its link is back: the killed broker lost the room's
    # history, so the member is told (gap event), then gets the message.
    gap = await next_json(member)
    message = await next_json(member)
    print(
        f"\na plain Django process published during a broker outage: {output.strip()}; "
        f"the member got {gap} then {message['text']!r}"
    )
    assert output.startswith("sent after")
    assert gap["gap"] == "history_lost"
    assert message["text"] == "from a view"

    # Past the documented bound: BrokerUnavailable, naming the setting.
    publisher = start_publisher(f"127.0.0.1:{free_port()}", 1.5)
    output, _ = await asyncio.to_thread(publisher.communicate, timeout=30)
    print(f"with no broker at all: {output.strip()}")
    assert output.startswith("BrokerUnavailable after 1.") and "publish_timeout" in output
    await member.close()


async def test_group_add_past_the_broker_group_limit_raises(stack: Stack) -> None:
    broker = stack.broker(None, "--max-groups-per-edge", "2")
    server = stack.edge(workers=1, broker=broker.listen)
    ok, _ = await join(f"{server.ws_url}/ws/group/a+b/")
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        await join(f"{server.ws_url}/ws/group/c+d/")
    assert refused.value.response.status_code == 500
    log = server.log()
    line = next(line for line in log.splitlines() if "GroupRefused" in line)
    print(f"\nthe third group's group_add raised: {line.strip()}")
    assert "subscription limit reached" in log
    await ok.close()


async def test_events_dropped_for_expiry_are_counted(stack: Stack) -> None:
    server = stack.edge(workers=1, env={"TEST_EXPIRY": "0.5"})
    stalling = await connect(f"{server.ws_url}/ws/faulty/stall/")
    sender = await connect(f"{server.ws_url}/ws/faulty/handler/")
    await stalling.send("2")  # the stalling consumer sleeps 2 s in its handler
    await asyncio.sleep(0.2)
    for _ in range(5):
        await sender.send("x")  # group_send({"type": "boom"}) to "faulty"
    await asyncio.to_thread(
        wait_until,
        lambda: (
            'django_ws_edge_deliveries_lost_total{reason="expired"}' in server.metrics()
            and 'reason="expired"} 0.0' not in server.metrics()
        ),
        15,
        "expired events to be counted",
    )
    line = next(
        line
        for line in server.metrics().splitlines()
        if 'reason="expired"' in line and "#" not in line
    )
    print(f"\n{line}")
    await stalling.close()
    await sender.close()
