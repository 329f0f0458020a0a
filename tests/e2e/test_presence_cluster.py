"""Exclude, member counts, presence, per-user and bulk sends, cluster-wide.

3 brokers, 2 edge servers of 2 workers each, real Django sessions (users logged in
with the test client, their session cookies sent on the handshake), and a plain
process's :class:`GRPCTransportLayer` (this test process) beside the edges' consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from django_ws_client.presence import user_group
from django_ws_client.transport.grpc_layer import GRPCTransportLayer
from django_ws_proto.ring import ShardRing

from support.accounts import make_users
from support.processes import TEST_PROJECT, Broker, EdgeServer, Stack, free_port

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

GRACE = 1.0
"""The brokers' --presence-grace-seconds in these tests."""

@dataclass
class Tab:
    """One browser tab: a websocket whose every message is kept."""

    ws: ClientConnection
    channel: str
    pid: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                self.messages.append(json.loads(raw))
                self.arrived.set()
        except Exception:
            pass

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages if "text" in m]

    def presence(self) -> list[tuple[str, str]]:
        return [(m["event"], str(m["user"])) for m in self.messages if "event" in m]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for message in self.messages[seen:]:
                if predicate(message):
                    return message
            seen = len(self.messages)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no such message within {timeout}s: {self.messages}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    async def ask(self, command: dict[str, Any], key: str) -> Any:
        count = len(self.messages)
        await self.ws.send(json.dumps(command))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for message in self.messages[count:]:
                if key in message:
                    return message[key]
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 1)
        raise AssertionError(f"no answer to {command}")

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()


async def open_tab(edge: EdgeServer, groups: str, session: str | None = None) -> Tab:
    headers = {"Cookie": f"sessionid={session}"} if session else {}
    ws = await connect(f"{edge.ws_url}/ws/presence/{groups}/", additional_headers=headers)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    tab = Tab(ws, hello["channel"], hello["pid"])
    tab.reader = asyncio.create_task(tab.read())
    return tab


@dataclass
class Cluster:
    stack: Stack
    addresses: list[str]
    brokers: list[Broker]
    edges: list[EdgeServer]
    layer: GRPCTransportLayer

    def broker_args(self, ordinal: int) -> tuple[str, ...]:
        return (
            *("--ordinal", str(ordinal), "--shards", "3"),
            *("--presence-grace-seconds", str(GRACE)),
        )

    def owned_by(self, ordinal: int, prefix: str) -> str:
        ring = ShardRing(3)
        return next(f"{prefix}{i}" for i in range(1000) if ring.owner(f"{prefix}{i}") == ordinal)


def plain_process_settings() -> None:
    """This test process plays a plain Django process: the test project's settings."""
    import os

    from django.conf import settings

    if not settings.configured:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
        if str(TEST_PROJECT) not in sys.path:
            sys.path.insert(0, str(TEST_PROJECT))


@pytest.fixture
async def cluster(stack: Stack) -> AsyncIterator[Cluster]:
    plain_process_settings()
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    made = Cluster(stack, addresses, [], [], None)  # type: ignore[arg-type]
    made.brokers = [
        stack.broker(addresses[k], *made.broker_args(k), name=f"broker-{k}") for k in range(3)
    ]
    made.layer = GRPCTransportLayer(
        brokers=addresses, shards=3, presence_groups=["presence_*"], publish_timeout=10
    )
    yield made
    await made.layer.close()


def start_edges(cluster: Cluster) -> None:
    cluster.edges = [
        cluster.stack.edge(
            workers=2, brokers=cluster.addresses, env={"TEST_SHARDS": "3"}, name=f"edge-{i}"
        )
        for i in range(2)
    ]


async def test_exclude_user_send_and_bulk_send(cluster: Cluster, stack: Stack) -> None:
    users = make_users(stack.tmp, ["alice", "bob"])
    start_edges(cluster)
    e0, e1 = cluster.edges
    alice_pk = users["alice"][0]
    # Alice has three tabs over both edge servers; Bob one; one anonymous visitor.
    alice = [
        await open_tab(e0, "room1", users["alice"][1]),
        await open_tab(e1, "room1", users["alice"][1]),
        await open_tab(e1, "room1", users["alice"][1]),
    ]
    bob = await open_tab(e0, "room1", users["bob"][1])
    anon = await open_tab(e1, "room1")
    everyone = [*alice, bob, anon]

    # exclude=self: the sender does not get its own message, everybody else does.
    await alice[0].ws.send(json.dumps({"send": "hi all", "exclude": "self"}))
    for tab in everyone[1:]:
        await tab.wait_for(lambda m: m.get("text") == "hi all")
    await asyncio.sleep(0.5)
    assert "hi all" not in alice[0].texts()
    print("exclude=self from an edge: 4 of 4 others got it, the sender did not")

    # A list, from a plain Django process.
    await cluster.layer.group_send(
        "room1",
        {"type": "room.message", "text": "not for bob"},
        exclude=[bob.channel, anon.channel],
    )
    for tab in alice:
        await tab.wait_for(lambda m: m.get("text") == "not for bob")
    await asyncio.sleep(0.5)
    assert "not for bob" not in bob.texts() + anon.texts()
    print("exclude=[bob, anonymous] from a plain process: 3 of 3 of alice's tabs got it")

    # user_send: every connection of the user, on both edge servers, nobody else.
    assert {tab.pid for tab in alice} >= {alice[0].pid}
    await cluster.layer.user_send(alice_pk, {"type": "room.message", "text": "to alice"})
    await bob.ws.send(json.dumps({"user_send": alice_pk, "text": "bob to alice"}))
    for tab in alice:
        await tab.wait_for(lambda m: m.get("text") == "to alice")
        await tab.wait_for(lambda m: m.get("text") == "bob to alice")
    await asyncio.sleep(0.5)
    assert not {"to alice", "bob to alice"} & set(bob.texts() + anon.texts())
    print(
        f"user_send(alice): her {len(alice)} tabs on 2 edge servers "
        f"({len({t.pid for t in alice})} worker processes) got it from a plain process and "
        "from an edge; bob and the anonymous visitor did not"
    )

    # Bulk: 1,000 (group, event) pairs to 20 groups, one request per broker.
    rooms = [f"bulk{i}" for i in range(20)]
    readers = [await open_tab(cluster.edges[i % 2], room) for i, room in enumerate(rooms)]
    before = [b.stats().publish_requests for b in cluster.brokers]
    pairs = [(rooms[i % 20], {"type": "room.message", "text": f"b{i}"}) for i in range(1000)]
    started = time.monotonic()
    await cluster.layer.group_send_many(pairs)
    sent = time.monotonic() - started
    for i, tab in enumerate(readers):
        want = [f"b{n}" for n in range(i, 1000, 20)]
        await tab.wait_for(lambda m, last=want[-1]: m.get("text") == last, 10)
        assert tab.texts() == want
    requests = [
        b.stats().publish_requests - n for b, n in zip(cluster.brokers, before, strict=True)
    ]
    owners = {ShardRing(3).owner(room) for room in rooms}
    assert requests == [1 if k in owners else 0 for k in range(3)]
    print(
        f"group_send_many of 1,000 pairs to 20 groups: sent in {sent * 1000:.0f} ms, all "
        f"1,000 delivered in order; Publish requests counted at brokers 0, 1, 2: {requests}"
    )
    # From an edge: a consumer's group_send_many, queued at once, one frame per broker.
    await bob.ws.send(json.dumps({"bulk": [[rooms[i % 20], f"e{i}"] for i in range(1000)]}))
    for i, tab in enumerate(readers):
        want = [f"e{n}" for n in range(i, 1000, 20)]
        await tab.wait_for(lambda m, last=want[-1]: m.get("text") == last, 10)
        assert [t for t in tab.texts() if t.startswith("e")] == want
    print("group_send_many of 1,000 pairs from a consumer: all 1,000 delivered in order")
    for tab in everyone + readers:
        await tab.close()


async def test_counts_and_members_exact_while_1000_join_and_leave(
    cluster: Cluster, stack: Stack
) -> None:
    start_edges(cluster)
    group = "countroom"
    tabs: list[Tab] = []
    layer = cluster.layer
    started = time.monotonic()
    for _batch in range(4):
        # 250 join at once, over both edge servers; group_add returns once the owning
        # broker counted each, so the count is exact as soon as they are all accepted.
        tabs += await asyncio.gather(*(open_tab(cluster.edges[i % 2], group) for i in range(250)))
        size = await layer.group_size(group)
        channels = await layer.group_channels(group)
        assert size == len(tabs) == len(channels)
        assert set(channels) == {t.channel for t in tabs}
        print(f"after {len(tabs)} joined: group_size {size}, group_channels {len(channels)}")
    joined_in = time.monotonic() - started
    # From an edge too: a consumer asks its own layer.
    assert await tabs[0].ask({"size": group}, "size") == 1000
    # Leaves: a closed socket is reported when its edge notices (not awaited by anyone).
    # In each round 250 leave while 100 others join at the same time.
    round_number = 0
    while tabs:
        round_number += 1
        joining = 100 if round_number <= 3 else 0
        leaving, tabs = tabs[:250], tabs[250:]
        changed_at = time.monotonic()
        _, joined = await asyncio.gather(
            asyncio.gather(*(t.close() for t in leaving)),
            asyncio.gather(*(open_tab(cluster.edges[i % 2], group) for i in range(joining))),
        )
        tabs += joined
        while (size := await layer.group_size(group)) != len(tabs):
            assert time.monotonic() - changed_at < 5, f"{size} after 5 s, {len(tabs)} members"
            await asyncio.sleep(0.05)
        channels = await layer.group_channels(group)
        assert set(channels) == {t.channel for t in tabs}
        print(
            f"250 left while {joining} joined: group_size {size} "
            f"({(time.monotonic() - changed_at) * 1000:.0f} ms after the changes began), "
            "group_channels exact"
        )
    print(f"1,000 members joined in {joined_in:.1f}s over 2 edge servers of 2 workers")


async def test_presence_events_one_join_per_user_grace_and_reconnect(
    cluster: Cluster, stack: Stack
) -> None:
    users = make_users(stack.tmp, ["alice", "bob"])
    start_edges(cluster)
    e0, e1 = cluster.edges
    alice_pk, bob_pk = str(users["alice"][0]), str(users["bob"][0])
    room = "presence_lobby"
    bob = await open_tab(e0, room, users["bob"][1])
    await bob.wait_for(lambda m: m.get("event") == "join" and m["user"] == bob_pk)
    tab1 = await open_tab(e0, room, users["alice"][1])
    tab2 = await open_tab(e1, room, users["alice"][1])
    join = await bob.wait_for(lambda m: m.get("event") == "join" and m["user"] == alice_pk)
    assert join["info"] == {"id": int(alice_pk), "name": "Alice"}
    await asyncio.sleep(GRACE + 0.5)
    assert bob.presence() == [("join", bob_pk), ("join", alice_pk)]
    present = {p.user: (p.info, p.connections) for p in await cluster.layer.group_presence(room)}
    assert present == {
        alice_pk: ({"id": int(alice_pk), "name": "Alice"}, 2),
        bob_pk: (
            {"id": int(bob_pk), "name": "Bob"},
            1,
        ),
    }
    from_edge = await bob.ask({"presence": room}, "present")
    assert sorted(map(tuple, ((u, c) for u, _, c in from_edge))) == sorted(
        (u, c) for u, (_, c) in present.items()
    )
    print(f"two tabs of alice on two edge servers: one presence.join {join}; present {present}")

    # One tab closes: still present, no event.
    await tab1.close()
    await asyncio.sleep(GRACE + 0.5)
    assert bob.presence() == [("join", bob_pk), ("join", alice_pk)]
    present = {p.user: p.connections for p in await cluster.layer.group_presence(room)}
    assert present == {alice_pk: 1, bob_pk: 1}
    # The last one closes: one leave, after the grace period.
    closed_at = time.monotonic()
    await tab2.close()
    await bob.wait_for(lambda m: m.get("event") == "leave" and m["user"] == alice_pk, 5)
    after = time.monotonic() - closed_at
    assert after >= GRACE * 0.9
    await asyncio.sleep(GRACE + 0.5)
    assert bob.presence() == [("join", bob_pk), ("join", alice_pk), ("leave", alice_pk)]
    print(f"alice's last tab closed: one presence.leave {after:.2f}s later (grace {GRACE:g}s)")

    # She comes back: a join; then a reconnect within the grace period: no event.
    tab3 = await open_tab(e1, room, users["alice"][1])
    await bob.wait_for(
        lambda m: m.get("event") == "join" and m["user"] == alice_pk and len(bob.presence()) == 4
    )
    await tab3.close()
    await asyncio.sleep(GRACE * 0.3)
    tab4 = await open_tab(e0, room, users["alice"][1])
    await asyncio.sleep(GRACE + 1.0)
    events = bob.presence()
    assert events == [
        ("join", bob_pk),
        ("join", alice_pk),
        ("leave", alice_pk),
        ("join", alice_pk),
    ], events
    present = {p.user: p.connections for p in await cluster.layer.group_presence(room)}
    assert present == {alice_pk: 1, bob_pk: 1}
    print(f"a reconnect within the grace period: no event; events seen by bob: {events}")
    for tab in (bob, tab4):
        await tab.close()


async def test_presence_whole_again_after_broker_sigkill(cluster: Cluster, stack: Stack) -> None:
    names = [f"user{i}" for i in range(12)]
    users = make_users(stack.tmp, names)
    start_edges(cluster)
    room = cluster.owned_by(1, "presence_k")
    tabs: list[Tab] = []
    for i, name in enumerate(names):
        for t in range(1 + i % 2):  # every other user has two tabs
            tabs.append(await open_tab(cluster.edges[(i + t) % 2], room, users[name][1]))
    anonymous = await open_tab(cluster.edges[1], room)
    expected = {str(users[n][0]): 1 + i % 2 for i, n in enumerate(names)}
    expected[anonymous.channel] = 1

    async def present() -> dict[str, int]:
        return {p.user: p.connections for p in await cluster.layer.group_presence(room)}

    assert await present() == expected
    await asyncio.sleep(0.5)
    events_before = sum(len(t.presence()) for t in tabs)

    victim = cluster.brokers[1]
    victim.signal(signal.SIGKILL)
    victim.wait(5)
    await asyncio.sleep(1.0)
    restarted_at = time.monotonic()
    cluster.brokers[1] = await asyncio.to_thread(
        cluster.stack.broker, cluster.addresses[1], *cluster.broker_args(1), name="broker-1-again"
    )
    seen: dict[str, int] = {}
    while True:
        try:
            seen = await present()
        except Exception:
            seen = {}
        if seen == expected:
            break
        assert time.monotonic() - restarted_at < 5, f"presence after 5 s: {seen}"
        await asyncio.sleep(0.05)
    whole_after = time.monotonic() - restarted_at
    assert await cluster.layer.group_size(room) == len(tabs) + 1
    # Past the grace period: nobody was announced as gone, nor as arriving again.
    await asyncio.sleep(GRACE + 1.0)
    events_after = sum(len(t.presence()) for t in tabs)
    spurious = [e for t in tabs for e in t.presence() if e[0] == "leave"]
    assert spurious == []
    assert events_after == events_before
    print(
        f"broker 1 SIGKILLed and restarted: presence of {len(expected)} users "
        f"({len(tabs) + 1} connections) whole again {whole_after:.2f}s after the restart "
        f"began; leave events: {len(spurious)}, presence events after the kill: "
        f"{events_after - events_before}"
    )
    for tab in [*tabs, anonymous]:
        await tab.close()


async def test_counts_and_presence_move_with_a_reshard(cluster: Cluster, stack: Stack) -> None:
    from django_ws_broker.reshard import reshard

    names = [f"user{i}" for i in range(6)]
    users = make_users(stack.tmp, names)
    fourth_address = f"127.0.0.1:{free_port()}"
    addresses = [*cluster.addresses, fourth_address]
    cluster.edges = [
        stack.edge(workers=2, brokers=addresses, env={"TEST_SHARDS": "3"}, name=f"edge-{i}")
        for i in range(2)
    ]
    groups = [f"presence_r{i}" for i in range(12)]
    moved = [g for g in groups if ShardRing(4).owner(g) == 3]
    assert moved
    tabs = []
    for i, name in enumerate(names):
        for t in range(1 + i % 2):
            tabs.append(
                await open_tab(cluster.edges[(i + t) % 2], "+".join(groups), users[name][1])
            )
    expected = {str(users[n][0]): 1 + i % 2 for i, n in enumerate(names)}
    await asyncio.sleep(0.5)
    events_before = sum(len(t.presence()) for t in tabs)

    fourth = await asyncio.to_thread(
        stack.broker,
        fourth_address,
        *("--ordinal", "3", "--shards", "4", "--topology-epoch", "1"),
        *("--presence-grace-seconds", str(GRACE)),
        name="broker-3",
    )
    started = time.monotonic()
    await asyncio.to_thread(reshard, addresses, 4, 1)
    layer = GRPCTransportLayer(brokers=addresses, shards=4, presence_groups=["presence_*"])
    try:
        while True:
            seen = {}
            for group in groups:
                try:
                    present = await layer.group_presence(group)
                    seen[group] = (
                        {p.user: p.connections for p in present},
                        await layer.group_size(group),
                    )
                except Exception:
                    seen[group] = ({}, 0)
            if all(s == (expected, len(tabs)) for s in seen.values()):
                break
            assert time.monotonic() - started < 10, f"after 10 s: {seen}"
            await asyncio.sleep(0.1)
        moved_after = time.monotonic() - started
        held = fourth.stats().members
    finally:
        await layer.close()
    await asyncio.sleep(GRACE + 1.0)
    events_after = sum(len(t.presence()) for t in tabs)
    assert events_after == events_before
    # Each tab is also in its user's group (user_send), some of which moved too.
    own = sum(
        1 + i % 2 for i, n in enumerate(names) if ShardRing(4).owner(user_group(users[n][0])) == 3
    )
    assert held == len(moved) * len(tabs) + own
    print(
        f"3 -> 4 brokers: {len(moved)} of {len(groups)} presence groups moved to broker 3; "
        f"counts and presence ({len(expected)} users, {len(tabs)} connections) whole at the new "
        f"owners {moved_after:.2f}s after the reshard began; broker 3 holds {held} members; "
        f"presence events since: {events_after - events_before}"
    )
    for tab in tabs:
        await tab.close()
