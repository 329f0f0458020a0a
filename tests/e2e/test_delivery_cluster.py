"""A cluster loses nothing to a broker restart, and says so when it cannot help it.

3 brokers, 2 edge servers of 2 workers, 100 rooms of 3 members whose consumers call
``group_send`` without catching errors (as Channels' tutorial does), a probe into every
room every 0.2 s. One broker is SIGKILLed and restarted 2 s later; another is stopped
with SIGTERM (as a rolling upgrade does) and started again.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.client import ClientConnection

from django_ws_proto.ring import ShardRing

from support.clients import join
from support.processes import Stack, free_port, wait_until

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

ROOMS = 100
PROBE_INTERVAL = 0.2


@dataclass
class Member:
    room: str
    ws: ClientConnection
    # (seq, epoch, offset) of every probe, in arrival order; gap events as (reason, at).
    probes: list[tuple[int, str, int]] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    async def read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "gap" in message:
                self.gaps.append(message["gap"])
                continue
            room, seq = message["text"].split(":")
            assert room == self.room
            epoch, offset = message["position"].split(".")
            self.probes.append((int(seq), epoch, int(offset)))


def lost_metric(text: str) -> float:
    found = re.search(
        r'^django_ws_edge_deliveries_lost_total\{reason="broker_lost"\} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


async def test_broker_kill_and_rolling_restart_lose_no_probe_silently(stack: Stack) -> None:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]

    def start_broker(ordinal: int, name: str) -> object:
        return stack.broker(
            addresses[ordinal],
            *("--ordinal", str(ordinal), "--shards", "3"),
            *("--state-dir", str(stack.tmp / f"state-{ordinal}"), "--grace-seconds", "5"),
            name=name,
        )

    brokers = [start_broker(k, f"broker-{k}") for k in range(3)]
    edges = [
        stack.edge(workers=2, brokers=addresses, env={"TEST_SHARDS": "3"}, name=f"edge-{i}")
        for i in range(2)
    ]
    ring = ShardRing(3)
    rooms = [f"room{r}" for r in range(ROOMS)]
    members: list[Member] = []
    for r, room in enumerate(rooms):
        for i in range(3):
            ws, _ = await join(f"{edges[(r + i) % 2].ws_url}/ws/room/{room}/")
            members.append(Member(room, ws))
    readers = [asyncio.create_task(m.read()) for m in members]
    senders = {m.room: m.ws for m in members[::3]}
    sent_at: dict[int, float] = {}
    stop = asyncio.Event()

    async def probe() -> None:
        seq = 0
        while not stop.is_set():
            sent_at[seq] = time.monotonic()
            for room, ws in senders.items():
                await ws.send(f"{room}:{seq}")
            seq += 1
            await asyncio.sleep(PROBE_INTERVAL)

    probing = asyncio.create_task(probe())
    await asyncio.sleep(1.5)

    # 1. SIGKILL broker 1, restart it 2 s later.
    killed = brokers[1]
    kill_at = time.monotonic()
    killed.signal(signal.SIGKILL)  # type: ignore[attr-defined]
    killed.wait(5)  # type: ignore[attr-defined]
    await asyncio.sleep(2)
    restart_at = time.monotonic()
    await asyncio.to_thread(start_broker, 1, "broker-1-restarted")
    await asyncio.to_thread(
        wait_until, lambda: all(e.readyz()[0] == 200 for e in edges), 15, "edges relinked"
    )
    await asyncio.sleep(1.5)

    # 2. SIGTERM broker 2 (a rolling upgrade), then start it again.
    stopped = brokers[2]
    term_at = time.monotonic()
    stopped.signal(signal.SIGTERM)  # type: ignore[attr-defined]
    await asyncio.to_thread(stopped.wait, 15)  # type: ignore[attr-defined]
    exited_at = time.monotonic()
    await asyncio.to_thread(start_broker, 2, "broker-2-restarted")
    await asyncio.to_thread(
        wait_until, lambda: all(e.readyz()[0] == 200 for e in edges), 15, "edges relinked"
    )
    await asyncio.sleep(1.5)
    stop.set()
    await probing
    last_seq = max(sent_at)
    # Let the last probes arrive everywhere.
    await asyncio.to_thread(
        wait_until,
        lambda: all(m.probes and m.probes[-1][0] == last_seq for m in members),
        15,
        "the last probe to reach every member",
    )
    for task in readers:
        task.cancel()

    closed = [m for m in members if m.ws.close_code is not None]
    sent = range(last_seq + 1)
    by_owner: dict[int, list[Member]] = defaultdict(list)
    for m in members:
        by_owner[ring.owner(m.room)].append(m)

    # Broker 1 (killed): every probe sent during the outage arrived; a probe missing
    # anywhere was lost inside the dead broker, and that member was told (gap event).
    outage = [s for s in sent if kill_at <= sent_at[s] <= restart_at]
    missing_killed = 0
    duplicates_killed = 0
    for m in by_owner[1]:
        seqs = [p[0] for p in m.probes]
        got = set(seqs)
        duplicates_killed += len(seqs) - len(got)
        assert set(outage) <= got, f"{m.room}: probes sent during the outage missing"
        missed = set(sent) - got
        missing_killed += len(missed)
        if missed:
            assert "history_lost" in m.gaps, f"{m.room} lost {sorted(missed)} without a gap event"
    gap_events = sum(len(m.gaps) for m in members)
    counted = sum(lost_metric(e.metrics()) for e in edges)

    # Broker 2 (SIGTERM) and broker 0: every probe exactly once, in order, and broker
    # 2's rooms kept their epochs with offsets running on.
    for ordinal in (0, 2):
        for m in by_owner[ordinal]:
            assert [p[0] for p in m.probes] == list(sent), f"{m.room} (broker {ordinal})"
            assert not m.gaps
            epochs = {p[1] for p in m.probes}
            assert len(epochs) == 1, f"{m.room}: epoch changed {epochs}"
            offsets = [p[2] for p in m.probes]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))

    print(
        f"\n{len(members)} members in {ROOMS} rooms, {len(sent)} probes per room "
        f"({len(sent) * ROOMS:,} sends, {len(sent) * len(members):,} deliveries expected)"
        f"\nSIGKILL of broker 1 ({len(by_owner[1]) // 3} rooms), restarted after "
        f"{restart_at - kill_at:.1f}s: {len(outage)} probes per room sent during the outage all "
        f"arrived; {missing_killed} deliveries lost inside the dead broker, "
        f"{duplicates_killed} duplicated; {gap_events} gap events reached members, "
        f'django_ws_edge_deliveries_lost_total{{reason="broker_lost"}} = {counted:.0f}'
        f"\nSIGTERM of broker 2 ({len(by_owner[2]) // 3} rooms): exited after "
        f"{exited_at - term_at:.1f}s, started again; every probe of its rooms exactly once, "
        f"in order, same epoch, offsets continuous"
        f"\nclient connections closed: {len(closed)}"
    )
    assert not closed
    assert counted == gap_events
    for m in members:
        await m.ws.close()
