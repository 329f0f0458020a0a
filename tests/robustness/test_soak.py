"""Soak: thousands of connections in hundreds of groups exchanging messages for minutes
against ``websockets_server -w 2`` and its broker (run with ``--soak``).

At the end, every process's resident memory is within 10% of its value after warm-up,
no process holds more open files than after warm-up, every member of every group got
every message sent to it in one order per group and each sender's in the order sent
(or the shortfall is explained by losses the metrics counted), and once the clients leave the server holds nothing for them.

Environment: ``SOAK_SECONDS`` (default 600), ``SOAK_CONNECTIONS`` (2,000),
``SOAK_GROUPS`` (200), ``SOAK_RATE`` (messages per second per group, default 2).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.client import ClientConnection

from support.clients import join
from support.processes import Stack, free_port
from support.resources import (
    MIB,
    fd_count,
    raise_fd_limit,
    rss,
    scrape,
    total,
    tree_pids,
)

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
CONNECTIONS = int(os.environ.get("SOAK_CONNECTIONS", "2000"))
GROUPS = int(os.environ.get("SOAK_GROUPS", "200"))
RATE = float(os.environ.get("SOAK_RATE", "2"))
WARMUP = min(60.0, SECONDS / 3)

pytestmark = [pytest.mark.soak, pytest.mark.slow, pytest.mark.timeout(SECONDS + 600)]

# Counters in which the server reports messages it lost, and why.
LOSS_COUNTERS = [
    ("edge", "django_ws_edge_broker_dropped_total"),
    ("edge", "django_ws_edge_slow_consumers_closed_total"),
    ("edge", "django_ws_edge_publish_lost_total"),
    ("edge", "django_ws_edge_undecodable_events_total"),
    ("broker", "django_ws_broker_dropped_total"),
]


@dataclass
class Member:
    ws: ClientConnection
    group: str
    received: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    closed_with: int | None = None


async def read(member: Member) -> None:
    try:
        async for raw in member.ws:
            message = json.loads(raw)
            if "error" in message:
                member.errors.append(message["error"])
                continue
            seq, sent_at = message["text"].split(":")
            member.received.append(int(seq))
            member.latencies.append(time.time() - float(sent_at))
    except Exception:
        pass
    member.closed_with = member.ws.close_code


def snapshot(pids: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {name: (rss(pid), fd_count(pid)) for name, pid in pids.items()}


def losses_counted(edge_metrics: str, broker_metrics: str) -> dict[str, float]:
    found = {}
    for where, name in LOSS_COUNTERS:
        samples = scrape(edge_metrics if where == "edge" else broker_metrics)
        found[name] = total(samples, name)
    return found


async def test_soak_groups_exchange_messages_with_flat_memory_and_no_loss(stack: Stack) -> None:
    raise_fd_limit(CONNECTIONS + 1000)
    metrics_port = free_port()
    broker = stack.broker(None, "--metrics", f"127.0.0.1:{metrics_port}")
    edge = stack.edge(workers=2, broker=broker.listen)
    edge_metrics = f"http://127.0.0.1:{edge.health_port}/metrics"
    broker_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    workers = edge.worker_pids()
    pids = {"supervisor": edge.pid, "broker": broker.pid}
    pids.update({f"worker {pid}": pid for pid in workers})
    assert set(tree_pids(edge.pid)) >= {edge.pid, *workers}
    idle = snapshot(pids)

    # Connect: members of each group spread over both workers by the kernel.
    groups = [f"soak{g}" for g in range(GROUPS)]
    gate = asyncio.Semaphore(200)

    async def member_of(group: str) -> Member:
        async with gate:
            ws, _ = await join(f"{edge.ws_url}/ws/group/{group}/", ping_interval=None)
            return Member(ws, group)

    started = time.monotonic()
    members = await asyncio.gather(*(member_of(groups[i % GROUPS]) for i in range(CONNECTIONS)))
    print(
        f"\n{CONNECTIONS} connections in {GROUPS} groups opened in {time.monotonic() - started:.1f}s"
    )
    by_group: dict[str, list[Member]] = defaultdict(list)
    for member in members:
        by_group[member.group].append(member)
    readers = [asyncio.create_task(read(member)) for member in members]

    sent: dict[str, int] = dict.fromkeys(groups, 0)
    refused_sends = 0
    stop = asyncio.Event()

    async def talk(group: str) -> None:
        nonlocal refused_sends
        interval = 1 / RATE
        next_at = time.monotonic()
        while not stop.is_set():
            speaker = by_group[group][sent[group] % len(by_group[group])]
            try:
                await speaker.ws.send(json.dumps({"text": f"{sent[group]}:{time.time():.6f}"}))
                sent[group] += 1
            except Exception:
                refused_sends += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    talkers = [asyncio.create_task(talk(group)) for group in groups]
    await asyncio.sleep(WARMUP)
    warm = snapshot(pids)
    warm_sent = sum(sent.values())
    await asyncio.sleep(SECONDS - WARMUP)
    end = snapshot(pids)  # steady state, connections still open
    stop.set()
    await asyncio.gather(*talkers)
    duration = time.monotonic() - started

    # Let the last messages arrive, then account for every one of them.
    expected = sum(sent[m.group] for m in members)
    deadline = time.monotonic() + 30
    while sum(len(m.received) for m in members) < expected:
        if time.monotonic() > deadline:
            break  # what is missing is accounted for below
        await asyncio.sleep(0.5)
    received = sum(len(m.received) for m in members)
    # The promise: one order per group, the same for every member, and each sender's
    # messages in the order sent (consecutive messages come from different speakers,
    # possibly on different workers, so the group's order need not be the send order).
    out_of_order = 0
    for group_members in by_group.values():
        reference = max((m.received for m in group_members), key=len)
        position = {seq: i for i, seq in enumerate(reference)}
        speakers = len(group_members)
        for m in group_members:
            seen = [position.get(seq, -1) for seq in m.received]
            per_speaker = [
                [seq for seq in m.received if seq % speakers == s] for s in range(speakers)
            ]
            if seen != sorted(seen) or any(q != sorted(q) for q in per_speaker):
                out_of_order += 1
    duplicates = sum(len(m.received) - len(set(m.received)) for m in members)
    closed_early = [m.closed_with for m in members if m.closed_with is not None]
    errors = sum(len(m.errors) for m in members)
    counted = losses_counted(edge_metrics, broker_metrics)
    latencies = sorted(x for m in members for x in m.latencies)
    lost = expected - received

    total_sent = sum(sent.values())
    print(
        f"soak: {duration:.0f}s ({SECONDS:.0f}s of traffic, warm-up {WARMUP:.0f}s), "
        f"{total_sent} messages sent to groups ({total_sent / SECONDS:.0f}/s, "
        f"{warm_sent} during warm-up), {expected} deliveries expected, {received} received, "
        f"{lost} lost; out of order {out_of_order}, duplicates {duplicates}, "
        f"sends refused {refused_sends}, error replies {errors}, "
        f"connections closed early {len(closed_early)}"
    )
    if latencies:
        print(
            f"latency send -> every member: p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, "
            f"max {latencies[-1] * 1000:.1f} ms"
        )
    print("losses counted by the server: " + ", ".join(f"{k} {v:.0f}" for k, v in counted.items()))
    print("process: RSS idle -> after warm-up -> end (MiB); open files idle -> warm-up -> end")
    for name in pids:
        print(
            f"  {name}: {idle[name][0] / MIB:.1f} -> {warm[name][0] / MIB:.1f} -> "
            f"{end[name][0] / MIB:.1f} ({(end[name][0] - warm[name][0]) / warm[name][0]:+.1%}); "
            f"{idle[name][1]} -> {warm[name][1]} -> {end[name][1]}"
        )

    # Memory and files: flat from warm-up to the end.
    for name in pids:
        assert end[name][0] <= warm[name][0] * 1.10, f"{name} grew past 10% after warm-up"
        assert end[name][1] <= warm[name][1] + 5, f"{name} holds more open files"
    # Messages: all of them, in order, or a shortfall the server counted.
    assert out_of_order == 0 and duplicates == 0
    assert refused_sends == 0 and errors == 0 and not closed_early, closed_early[:10]
    if lost:
        assert sum(counted.values()) > 0, f"{lost} deliveries lost and none counted"
    assert edge.worker_pids() == workers, "a worker was restarted"

    # The clients leave: nothing is held for them any more.
    await asyncio.gather(*(m.ws.close() for m in members))
    await asyncio.gather(*readers)
    deadline = time.monotonic() + 30
    while total(scrape(edge_metrics), "django_ws_edge_connections_open") > 0:
        assert time.monotonic() < deadline, "connections still counted open"
        await asyncio.sleep(0.5)
    after = snapshot(pids)
    print("open files after the clients left: " + ", ".join(f"{n} {after[n][1]}" for n in pids))
    for name in pids:
        assert after[name][1] <= idle[name][1] + 5, f"{name} leaks files"
    assert broker.stats().subscriptions == 0
