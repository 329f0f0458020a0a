"""The seed's chat end to end: real workers, a real embedded broker, real sockets."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support.clients import join, on_distinct_workers
from support.processes import Stack, wait_until

pytestmark = pytest.mark.timeout(90)


async def test_two_workers_share_a_group_and_other_groups_hear_nothing(stack: Stack) -> None:
    server = stack.edge(workers=2)
    (a, hello_a), (b, hello_b) = await on_distinct_workers(f"{server.ws_url}/ws/group/room1/")
    assert hello_a["pid"] != hello_b["pid"]
    assert {hello_a["pid"], hello_b["pid"]} <= set(server.worker_pids())
    outsider, _ = await join(f"{server.ws_url}/ws/group/room2/")

    await a.send(json.dumps({"text": "from a"}))
    await b.send(json.dumps({"text": "from b"}))
    got_a = [json.loads(await asyncio.wait_for(a.recv(), 5)) for _ in range(2)]
    got_b = [json.loads(await asyncio.wait_for(b.recv(), 5)) for _ in range(2)]
    assert sorted(m["text"] for m in got_a) == ["from a", "from b"]
    assert sorted(m["text"] for m in got_b) == ["from a", "from b"]
    # Each message was delivered by the receiver's own worker.
    assert {m["pid"] for m in got_a} == {hello_a["pid"]}
    assert {m["pid"] for m in got_b} == {hello_b["pid"]}
    print(f"\nworkers: a on pid {hello_a['pid']}, b on pid {hello_b['pid']}")

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(outsider.recv(), 0.5)
    for ws in (a, b, outsider):
        await ws.close()


async def test_consumer_raising_in_receive_closes_1011_and_server_keeps_serving(
    stack: Stack,
) -> None:
    server = stack.edge(workers=1)
    bystander, _ = await join(f"{server.ws_url}/ws/group/calm/")
    async with connect(f"{server.ws_url}/ws/raise/receive/") as ws:
        await ws.send("please fail")
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1011
    wait_until(
        lambda: "boom from receive: please fail" in server.log(), 5, "the traceback in the log"
    )
    log = server.log()
    assert "Traceback (most recent call last)" in log
    assert "RaisingConsumer" in log
    wait_until(
        lambda: "disconnect raising 1011" in server.events(),
        5,
        "disconnect() of the failed consumer",
    )
    # The worker still serves: the bystander's group works and new connections open.
    await bystander.send(json.dumps({"text": "still here"}))
    assert json.loads(await asyncio.wait_for(bystander.recv(), 5))["text"] == "still here"
    newcomer, _ = await join(f"{server.ws_url}/ws/group/calm/")
    await newcomer.close()
    await bystander.close()


async def test_handshake_statuses(stack: Stack) -> None:
    server = stack.edge(workers=1)
    with pytest.raises(InvalidStatus) as unknown:
        await connect(f"{server.ws_url}/ws/no-such-route/")
    assert unknown.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as rejected:
        await connect(f"{server.ws_url}/ws/reject/")
    assert rejected.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as raised:
        await connect(f"{server.ws_url}/ws/raise/connect/")
    assert raised.value.response.status_code == 500
    assert "boom from connect" in server.log()


async def test_sigkill_worker_is_replaced_and_its_subscriptions_dropped(
    stack: Stack, tmp_path
) -> None:
    broker = stack.broker(f"unix:{tmp_path / 'broker.sock'}")
    server = stack.edge(workers=2, broker=broker.listen)
    (a, hello_a), (b, hello_b) = await on_distinct_workers(f"{server.ws_url}/ws/group/shared/")
    # Give each worker a group of its own too.
    stats = broker.stats(include_groups=True)
    assert stats.group_edges["shared"] == 2
    victim_pid = int(hello_b["pid"])
    survivor_pid = int(hello_a["pid"])
    edges_before = set(stats.edge_ids)
    assert len(edges_before) == 2

    import os

    os.kill(victim_pid, signal.SIGKILL)
    await asyncio.wait_for(b.wait_closed(), 10)
    # The broker dropped the dead worker's stream and with it its subscriptions.
    wait_until(
        lambda: broker.stats(include_groups=True).group_edges.get("shared") == 1,
        10,
        "the broker to drop the dead worker's subscription",
    )

    # The supervisor started a replacement and the server is ready again.
    def replaced() -> bool:
        pids = server.worker_pids()
        return len(pids) == 2 and victim_pid not in pids and server.readyz()[0] == 200

    wait_until(replaced, 20, "a replacement worker")
    assert survivor_pid in server.worker_pids()
    assert len(set(broker.stats().edge_ids) - edges_before) == 1
    # The survivors' group still works, and a new member (wherever it lands) joins it.
    c, _ = await join(f"{server.ws_url}/ws/group/shared/")
    await a.send(json.dumps({"text": "after the kill"}))
    assert json.loads(await asyncio.wait_for(a.recv(), 5))["text"] == "after the kill"
    assert json.loads(await asyncio.wait_for(c.recv(), 5))["text"] == "after the kill"
    await a.close()
    await c.close()
