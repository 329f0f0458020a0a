"""The drop-in CHANNEL_LAYERS backend, ``django_ws_client.layers.GRPCChannelLayer``,
against real brokers over real gRPC.

Channels' own layer tests (``tests/test_inmemorychannel.py`` and ``tests/test_layers.py``
of Channels, ``tests/test_core.py`` of channels_redis) are not installed with the
packages, so they are ported here one by one, each docstring naming the test it mirrors.
Where the spec's example uses a normal channel name (``"test-channel-1"``), the port
uses a ``new_channel()`` name: this layer carries process-specific channels only (see
``docs/drop-in-layer.md``), and a normal name is refused by name
(``test_normal_channels_are_refused_by_name``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import channel_layers, get_channel_layer
from django.test import override_settings

from django_ws_client.exceptions import BrokerUnavailable
from django_ws_client.exceptions import ChannelFull as OurChannelFull
from django_ws_client.layers import GRPCChannelLayer
from django_ws_edge import metrics

from support import layer_fork
from support.clients import join
from support.processes import TEST_PROJECT, Broker, Stack, base_env, free_port

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the spec tests (each test's layer is its own process to it)."""
    started = Stack(tmp_path_factory.mktemp("drop-in-broker"))
    try:
        yield started.broker()
    finally:
        started.stop_all()


@pytest.fixture
async def channel_layer(broker: Broker) -> Any:
    """Channels' fixture: capacity 3, flushed and closed after the test."""
    layer = GRPCChannelLayer(address=broker.listen, capacity=3)
    yield layer
    await layer.flush()
    await layer.close()


async def nothing_within(layer: GRPCChannelLayer, channel: str, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            await layer.receive(channel)


# Channels' tests/test_layers.py ----------------------------------------------------


def test_backend_from_settings_and_override_settings(broker: Broker) -> None:
    """Mirrors Channels' ``TestChannelLayerManager.test_config_instance`` and
    ``test_override_settings``: CHANNEL_LAYERS builds the backend with CONFIG as keyword
    arguments, and the cache is reset when the setting changes."""
    setting = {
        "default": {
            "BACKEND": "django_ws_client.layers.GRPCChannelLayer",
            "CONFIG": {"address": broker.listen, "expiry": 100500, "channel_capacity": {"x*": 2}},
        }
    }
    with override_settings(CHANNEL_LAYERS=setting):
        assert channel_layers.backends == {}
        layer = get_channel_layer()
        assert isinstance(layer, GRPCChannelLayer)
        assert layer.expiry == 100500 and layer.config.expiry == 100500
        assert layer.get_capacity("ws.abc!x.1") == 2 and layer.get_capacity("ws.abc!y.1") == 100
        assert layer.extensions == ["groups", "flush"]
    assert channel_layers.backends == {}


def test_django_ws_processes_read_the_same_brokers(broker: Broker) -> None:
    """A project moving step by step keeps CHANNEL_LAYERS: its websockets_server and
    views read the drop-in entry as the gRPC layer with the same brokers (Channels-only
    keys left out), so both kinds of consumer share groups."""
    from django_ws_client import conf
    from django_ws_client.transport import layer_config

    setting = {
        "default": {
            "BACKEND": "django_ws_client.layers.GRPCChannelLayer",
            "CONFIG": {"address": broker.listen, "capacity": 7, "channel_capacity": {"x": 1}},
        }
    }
    with override_settings(CHANNEL_LAYERS=setting, WEBSOCKET_TRANSPORT_BACKENDS=None):
        entry = conf.transport_backends()["default"]
        assert entry["BACKEND"] == "django_ws_client.transport.GRPCTransportLayer"
        assert entry["CONFIG"] == {"address": broker.listen, "capacity": 7}
        assert layer_config().brokers == (broker.listen,)


def test_bad_config_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"CHANNEL_LAYERS.*GRPCChannelLayer.*'address'"):
        GRPCChannelLayer(address="nowhere")
    with pytest.raises(ValueError, match=r"CHANNEL_LAYERS.*'capacity'"):
        GRPCChannelLayer(address="127.0.0.1:1", capacity=0)


async def test_send_receive_from_layers_py(channel_layer: GRPCChannelLayer) -> None:
    """Mirrors Channels' ``tests/test_layers.py::test_send_receive`` (a message comes back
    equal to what was sent)."""
    channel = await channel_layer.new_channel()
    message = {"type": "test.message"}
    await channel_layer.send(channel, message)
    assert message == await channel_layer.receive(channel)


# Channels' tests/test_inmemorychannel.py and channels_redis' tests/test_core.py ------


async def test_send_receive(channel_layer: GRPCChannelLayer) -> None:
    """Mirrors ``test_send_receive`` (Channels' in-memory tests, channels_redis)."""
    channel = await channel_layer.new_channel()
    await channel_layer.send(channel, {"type": "test.message", "text": "Ahoy-hoy!"})
    message = await channel_layer.receive(channel)
    assert message["type"] == "test.message"
    assert message["text"] == "Ahoy-hoy!"


async def test_send_capacity(channel_layer: GRPCChannelLayer) -> None:
    """Mirrors ``test_send_capacity``: ChannelFull when we hit the send capacity. The
    error is Channels' exception (and django-ws' too)."""
    channel = await channel_layer.new_channel()
    for _ in range(3):
        await channel_layer.send(channel, {"type": "test.message"})
    with pytest.raises(ChannelFull) as raised:
        await channel_layer.send(channel, {"type": "test.message"})
    assert isinstance(raised.value, OurChannelFull)


async def test_send_specific_capacity(broker: Broker) -> None:
    """Mirrors channels_redis' ``test_send_specific_capacity``: ``channel_capacity``
    patterns (globs) match the channel's prefix."""
    layer = GRPCChannelLayer(address=broker.listen, capacity=3, channel_capacity={"one*": 1})
    try:
        one = await layer.new_channel("one")
        await layer.send(one, {"type": "test.message"})
        with pytest.raises(ChannelFull):
            await layer.send(one, {"type": "test.message"})
        other = await layer.new_channel("other")
        for _ in range(3):
            await layer.send(other, {"type": "test.message"})
    finally:
        await layer.flush()


async def test_process_local_send_receive(channel_layer: GRPCChannelLayer) -> None:
    """Mirrors ``test_process_local_send_receive``."""
    channel_name = await channel_layer.new_channel()
    await channel_layer.send(channel_name, {"type": "test.message", "text": "Local only please"})
    message = await channel_layer.receive(channel_name)
    assert message["type"] == "test.message"
    assert message["text"] == "Local only please"


async def test_multi_send_receive(channel_layer: GRPCChannelLayer) -> None:
    """Mirrors ``test_multi_send_receive``: overlapping sends and receives, in order."""
    channel = await channel_layer.new_channel()
    await channel_layer.send(channel, {"type": "message.1"})
    await channel_layer.send(channel, {"type": "message.2"})
    await channel_layer.send(channel, {"type": "message.3"})
    assert (await channel_layer.receive(channel))["type"] == "message.1"
    assert (await channel_layer.receive(channel))["type"] == "message.2"
    assert (await channel_layer.receive(channel))["type"] == "message.3"


async def test_reject_bad_channel(channel_layer: GRPCChannelLayer) -> None:
    """Mirrors channels_redis' ``test_reject_bad_channel``, with Channels' own
    ``TypeError`` messages for bad channel and group names."""
    with pytest.raises(TypeError, match="Channel name must be a valid unicode string"):
        await channel_layer.send("=+135!", {"type": "foom"})
    with pytest.raises(TypeError, match="Channel name must be a valid unicode string"):
        await channel_layer.receive("=+135!")
    with pytest.raises(TypeError, match="Group name must be a valid unicode string"):
        await channel_layer.group_add("bad group", await channel_layer.new_channel())
    with pytest.raises(TypeError, match="Group name must be a valid unicode string"):
        await channel_layer.group_send("g" * 100, {"type": "foom"})
    with pytest.raises(TypeError, match="Channel name must be a valid unicode string"):
        await channel_layer.group_discard("group", "x" * 100)
    with pytest.raises(AssertionError, match="message is not a dict"):
        await channel_layer.send(await channel_layer.new_channel(), "text")  # type: ignore[arg-type]


async def test_reject_bad_client_prefix(channel_layer: GRPCChannelLayer) -> None:
    """Mirrors channels_redis' ``test_reject_bad_client_prefix``: receiving on a channel
    of another process is refused (here a ValueError that says why)."""
    with pytest.raises(ValueError, match="not made by new_channel"):
        await channel_layer.receive("not-client-prefix!local_part")


async def test_normal_channels_are_refused_by_name(channel_layer: GRPCChannelLayer) -> None:
    """Deviation: normal channels (Channels' ``runworker``) are not carried; saying so
    beats a message silently dropped by the broker."""
    for call in (
        channel_layer.send("test-channel-1", {"type": "test.message"}),
        channel_layer.receive("test-channel-1"),
        channel_layer.group_add("test-group", "test-gr-chan-1"),
    ):
        with pytest.raises(ValueError, match="normal channel"):
            await call


async def test_groups_basic(channel_layer: GRPCChannelLayer) -> None:
    """Mirrors ``test_groups_basic`` (channels_redis' version, with new_channel names)."""
    channel_name1 = await channel_layer.new_channel(prefix="test-gr-chan-1")
    channel_name2 = await channel_layer.new_channel(prefix="test-gr-chan-2")
    channel_name3 = await channel_layer.new_channel(prefix="test-gr-chan-3")
    await channel_layer.group_add("test-group", channel_name1)
    await channel_layer.group_add("test-group", channel_name2)
    await channel_layer.group_add("test-group", channel_name3)
    await channel_layer.group_discard("test-group", channel_name2)
    started = time.perf_counter()
    await channel_layer.group_send("test-group", {"type": "message.1"})
    async with asyncio.timeout(1):
        assert (await channel_layer.receive(channel_name1))["type"] == "message.1"
        assert (await channel_layer.receive(channel_name3))["type"] == "message.1"
    print(f"\ngroup_send to 2 local members: {(time.perf_counter() - started) * 1000:.1f} ms")
    await nothing_within(channel_layer, channel_name2, 1)


async def test_groups_channel_full(channel_layer: GRPCChannelLayer) -> None:
    """Mirrors ``test_groups_channel_full``: group_send ignores ChannelFull (the member
    misses what does not fit, and the loss is counted)."""
    channel = await channel_layer.new_channel()
    await channel_layer.group_add("test-group-full", channel)
    dropped = metrics.QUEUE_DROPPED._value.get()
    for _ in range(5):
        await channel_layer.group_send("test-group-full", {"type": "message.1"})
    for _ in range(3):
        async with asyncio.timeout(2):
            assert (await channel_layer.receive(channel))["type"] == "message.1"
    await nothing_within(channel_layer, channel, 0.3)
    counted = metrics.QUEUE_DROPPED._value.get() - dropped
    print(f"\n5 group sends to a queue of 3: 3 received, {counted:g} counted as dropped")
    assert counted == 2


async def test_groups_multiple_hosts(tmp_path: Path) -> None:
    """Mirrors channels_redis' ``test_groups_multiple_hosts`` and
    ``test_groups_multiple_hosts_performance`` (100 channels within 10 s): two brokers,
    groups sharded between them."""
    stack = Stack(tmp_path)
    try:
        ports = [free_port(), free_port()]
        addresses = [f"127.0.0.1:{port}" for port in ports]
        for ordinal, address in enumerate(addresses):
            stack.broker(address, "--ordinal", str(ordinal), "--shards", "2", name=f"b{ordinal}")
        layer = GRPCChannelLayer(brokers=addresses, capacity=100)
        try:
            channel_name1 = await layer.new_channel(prefix="channel1")
            channel_name2 = await layer.new_channel(prefix="channel2")
            channel_name3 = await layer.new_channel(prefix="channel3")
            groups = [f"test-group-{k}" for k in range(8)]  # both brokers own some
            for group in groups:
                for channel in (channel_name1, channel_name2, channel_name3):
                    await layer.group_add(group, channel)
                await layer.group_discard(group, channel_name2)
                await layer.group_send(group, {"type": "message.1", "group": group})
            async with asyncio.timeout(2):
                for channel in (channel_name1, channel_name3):
                    got = {(await layer.receive(channel))["group"] for _ in groups}
                    assert got == set(groups)
            await nothing_within(layer, channel_name2, 1)

            channels = []
            started = time.perf_counter()
            for i in range(100):
                channel = await layer.new_channel(prefix=f"channel{i}")
                await layer.group_add("test-group", channel)
                channels.append(channel)
            joined = time.perf_counter() - started
            async with asyncio.timeout(10):
                await layer.group_send("test-group", {"type": "message.1"})
                for channel in channels:
                    assert (await layer.receive(channel))["type"] == "message.1"
            total = time.perf_counter() - started
            print(
                f"\n2 brokers, {len(groups)} groups: each member got each group's message; "
                f"100 joins in {joined * 1000:.0f} ms, all 100 received "
                f"{(total - joined) * 1000:.1f} ms after the group_send"
            )
            assert await layer.group_size("test-group") == 100
        finally:
            await layer.flush()
    finally:
        stack.stop_all()


async def test_expiry_single(broker: Broker) -> None:
    """Mirrors Channels' ``test_expiry_single``: a message can expire (and is counted)."""
    layer = GRPCChannelLayer(address=broker.listen, expiry=0.1)
    expired = metrics.DELIVERIES_LOST.labels("expired")._value.get()
    try:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "message.1"})
        await asyncio.sleep(0.15)
        await nothing_within(layer, channel, 0.5)
        assert metrics.DELIVERIES_LOST.labels("expired")._value.get() - expired == 1
        # Nobody read it for `expiry` after its reader went: the channel is forgotten.
        await asyncio.sleep(0.2)
        with pytest.raises(ValueError, match="forgotten"):
            await layer.receive(channel)
    finally:
        await layer.flush()


async def test_expiry_unread(broker: Broker) -> None:
    """Mirrors Channels' ``test_expiry_unread``: an expired message on one channel does
    not stop another channel."""
    layer = GRPCChannelLayer(address=broker.listen, expiry=0.1)
    try:
        channel1, channel2 = await layer.new_channel(), await layer.new_channel()
        await layer.send(channel1, {"type": "message.1"})
        await asyncio.sleep(0.1)
        await layer.send(channel2, {"type": "message.2"})
        assert (await layer.receive(channel2))["type"] == "message.2"
        await nothing_within(layer, channel1, 0.3)
    finally:
        await layer.flush()


async def test_expiry_multi(broker: Broker) -> None:
    """Mirrors Channels' ``test_expiry_multi``; expired messages also free the capacity
    they held (capacity 3 here)."""
    layer = GRPCChannelLayer(address=broker.listen, expiry=0.1, capacity=3)
    try:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "message.1"})
        await layer.send(channel, {"type": "message.2"})
        await layer.send(channel, {"type": "message.3"})
        assert (await layer.receive(channel))["type"] == "message.1"
        await asyncio.sleep(0.1)
        await layer.send(channel, {"type": "message.4"})
        await layer.send(channel, {"type": "message.5"})
        await layer.send(channel, {"type": "message.6"})
        assert (await layer.receive(channel))["type"] == "message.4"
        assert (await layer.receive(channel))["type"] == "message.5"
        assert (await layer.receive(channel))["type"] == "message.6"
        await nothing_within(layer, channel, 0.5)
    finally:
        await layer.flush()


async def test_flush_forgets_channels_and_groups(broker: Broker) -> None:
    """Channels' flush extension: after flush(), nothing of before is left."""
    layer = GRPCChannelLayer(address=broker.listen)
    other = GRPCChannelLayer(address=broker.listen)
    try:
        channel = await layer.new_channel()
        await layer.group_add("flushed", channel)
        assert await other.group_size("flushed") == 1
        await layer.flush()
        with pytest.raises(ValueError, match="not made by new_channel"):
            await layer.receive(channel)
        for _ in range(100):  # the broker drops a closed stream's members
            if await other.group_size("flushed") == 0:
                break
            await asyncio.sleep(0.02)
        assert await other.group_size("flushed") == 0
        fresh = await layer.new_channel()
        await layer.group_add("flushed", fresh)
        await other.group_send("flushed", {"type": "after.flush"})
        async with asyncio.timeout(2):
            assert (await layer.receive(fresh))["type"] == "after.flush"
    finally:
        await layer.flush()
        await other.flush()


# Processes and event loops ---------------------------------------------------------


async def test_two_processes_exchange_group_messages(broker: Broker) -> None:
    """Two layers are two processes to the broker: each member gets the other's group
    messages, ``exclude=`` and ``group_size`` work across them, and a send reaches a
    channel of the other process."""
    first = GRPCChannelLayer(address=broker.listen)
    second = GRPCChannelLayer(address=broker.listen, capacity=1000)
    try:
        a = await first.new_channel()
        b = await second.new_channel()
        assert a.split("!")[0] != b.split("!")[0]
        await first.group_add("room", a)
        await second.group_add("room", b)
        assert await first.group_size("room") == 2
        started = time.perf_counter()
        await first.group_send("room", {"type": "chat.message", "text": "from first"})
        async with asyncio.timeout(2):
            assert (await second.receive(b))["text"] == "from first"
            assert (await first.receive(a))["text"] == "from first"
        cross = time.perf_counter() - started
        await second.group_send("room", {"type": "chat.message", "text": "not you"}, exclude=b)
        async with asyncio.timeout(2):
            assert (await first.receive(a))["text"] == "not you"
        await nothing_within(second, b, 0.3)
        await second.send(a, {"type": "direct", "text": "to a"})
        async with asyncio.timeout(2):
            assert (await first.receive(a))["text"] == "to a"
        await second.group_add("bulk", b)
        count = 500
        started = time.perf_counter()
        await first.group_send_many(("bulk", {"type": "n", "n": n}) for n in range(count))
        async with asyncio.timeout(10):
            got = [(await second.receive(b))["n"] for _ in range(count)]
        took = time.perf_counter() - started
        assert got == list(range(count))
        print(
            f"\ncross-process group_send delivered in {cross * 1000:.1f} ms; "
            f"{count} by group_send_many in order in {took * 1000:.0f} ms"
        )
    finally:
        await first.flush()
        await second.flush()


async def test_presence_across_processes(broker: Broker) -> None:
    """django-ws' presence extension through the drop-in layer: groups that opted in
    (CONFIG ``presence_groups``) list who is present in every process, with the info
    dicts the channels joined with."""
    config = {"address": broker.listen, "presence_groups": ["pres-*"]}
    first, second = GRPCChannelLayer(**config), GRPCChannelLayer(**config)
    try:
        alice = await first.new_channel()
        bob = await second.new_channel()
        await first.group_add("pres-room", alice, info={"id": "1", "name": "alice"})
        await second.group_add("pres-room", bob, info={"id": "2", "name": "bob"})
        present = None
        for _ in range(100):  # presence is reported as members join, asynchronously
            present = {p.user: p.info["name"] for p in await first.group_presence("pres-room")}
            if len(present) == 2:
                break
            await asyncio.sleep(0.02)
        assert present == {"1": "alice", "2": "bob"}
        assert sorted(await second.group_channels("pres-room")) == sorted([alice, bob])
        print(f"\npresence across two processes: {present}")
    finally:
        await first.flush()
        await second.flush()


def test_event_loops_in_sequence_and_async_to_sync(broker: Broker) -> None:
    """Mirrors channels_redis' ``test_double_receive`` in spirit: one layer used from
    several event loops one after another (as test frameworks and ``async_to_sync`` in
    sync code do). Each loop gets its own core (its own process id in channel names);
    a channel belongs to the loop that made it; ``async_to_sync(group_send)`` from sync
    code returns once the broker has the message, so none is lost with its loop."""
    layer = GRPCChannelLayer(address=broker.listen)

    async def first_loop() -> tuple[str, str]:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "test.message.1"})
        assert (await layer.receive(channel))["type"] == "test.message.1"
        return channel, layer._core().edge_id

    channel1, edge1 = asyncio.run(first_loop())

    async def second_loop() -> str:
        with pytest.raises(ValueError, match="not made by new_channel"):
            await layer.receive(channel1)
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "test.message.2"})
        assert (await layer.receive(channel))["type"] == "test.message.2"
        return layer._core().edge_id

    edge2 = asyncio.run(second_loop())
    assert edge1 != edge2
    assert layer._cores == {}  # each core closed with its loop

    # A receiver on a long-lived loop in a thread; sync code sends with async_to_sync.
    ready = threading.Event()
    sent = threading.Event()
    got: list[str] = []

    async def receiver() -> None:
        channel = await layer.new_channel()
        await layer.group_add("sync-senders", channel)
        ready.set()
        for _ in range(5):
            got.append((await layer.receive(channel))["text"])
        # layer.close() closes the cores of every loop: the last send's core may still
        # wait for its acknowledgement, which can come after the message itself.
        await asyncio.to_thread(sent.wait, 10)
        await layer.close()

    thread = threading.Thread(target=asyncio.run, args=(receiver(),))
    thread.start()
    assert ready.wait(10)
    timings = []
    for n in range(5):
        started = time.perf_counter()
        async_to_sync(layer.group_send)("sync-senders", {"type": "m", "text": str(n)})
        timings.append((time.perf_counter() - started) * 1000)
    sent.set()
    thread.join(10)
    assert got == [str(n) for n in range(5)]
    print(
        f"\n2 loops in sequence: edge ids differ; 5 async_to_sync(group_send) calls, each "
        f"its own loop and stream: {', '.join(f'{t:.1f}' for t in timings)} ms, all received"
    )


STARTUP_SCRIPT = """
import asyncio, json, sys, threading
import django
from django.conf import settings

backend, address = sys.argv[1], sys.argv[2]
settings.configure(
    INSTALLED_APPS=["django_ws_client"],
    CHANNEL_LAYERS={"default": {"BACKEND": backend, "CONFIG": {"address": address}}},
)
django.setup()
seen = {
    "core_loaded": "django_ws_edge.process_layer" in sys.modules,
    "threads": threading.active_count(),
}
if backend.startswith("django_ws_client"):
    from channels.layers import get_channel_layer

    async def main():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add("startup", channel)
        await layer.group_send("startup", {"type": "chat.message", "text": "hi"})
        seen["received"] = (await asyncio.wait_for(layer.receive(channel), 10))["text"]
        await layer.close()

    asyncio.run(main())
print(json.dumps(seen))
"""


@pytest.mark.parametrize(
    "backend",
    ["django_ws_client.layers.GRPCChannelLayer", "channels.layers.InMemoryChannelLayer"],
)
def test_the_layer_core_loads_while_django_starts(broker: Broker, backend: str) -> None:
    """With GRPCChannelLayer in CHANNEL_LAYERS, the core it would load on first use
    (the broker link, delivery) loads in django.setup(), not inside a worker's event
    loop at its first connection; loading starts no thread, and the layer then works.
    Projects without it do not load it."""
    done = subprocess.run(
        [sys.executable, "-c", STARTUP_SCRIPT, backend, broker.listen],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=base_env(),
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{backend}: {seen}")
    ours = backend.startswith("django_ws_client")
    assert seen["core_loaded"] is ours
    assert seen["threads"] == 1
    if ours:
        assert seen["received"] == "hi"


def run_fork_scenario(scenario: str, address: str) -> dict[str, Any]:
    """Run a scenario of ``support/layer_fork.py`` in a fresh interpreter (no other
    test's gRPC channels in the parent) and return what it saw."""
    done = subprocess.run(
        [sys.executable, str(Path(layer_fork.__file__)), scenario, address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=base_env(
            DJANGO_SETTINGS_MODULE="testproject.settings",
            PYTHONPATH=os.pathsep.join([str(TEST_PROJECT), str(TEST_PROJECT.parent)]),
        ),
    )
    assert done.returncode == 0, done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcome


def test_fork_gets_a_fresh_core(broker: Broker) -> None:
    """A layer used in the parent (as gunicorn's master might, with ``async_to_sync``),
    then in a child made by fork (multiprocessing's "fork" start method): the child
    starts its own stream (its own process id) and the parent goes on with its own;
    parent and child exchange group messages through the broker."""
    seen = run_fork_scenario("closed", broker.listen)
    _, child_edge, reused, child_channel = seen["ready"]
    assert seen["ready"][0] == "child-ready", seen
    assert len({seen["first_edge"], seen["parent_edge"], child_edge}) == 3
    assert reused == 0  # nothing of the parent's cores is used in the child
    assert child_channel.split("!")[0] == child_edge
    assert seen["reply"]["text"] == "got from parent"
    assert seen["done"] == ["child-done"] and seen["exitcode"] == 0
    print(
        f"\nfork: parent {seen['first_edge'][:12]}... then {seen['parent_edge'][:12]}..., "
        f"child {child_edge[:12]}... (its own stream); parent->child->parent round trip "
        f"in {seen['ms']:.0f} ms including the fork"
    )


# Broker restarts -------------------------------------------------------------------


async def test_broker_killed_and_restarted_mid_way(tmp_path: Path) -> None:
    """SIGKILL the broker with a member subscribed; a group_send made while it is down
    waits, is delivered once the broker is back (the process subscribed again), and the
    member keeps receiving afterwards. With a short ``publish_timeout`` a send to a dead
    broker raises ``BrokerUnavailable`` at the bound."""
    stack = Stack(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    try:
        victim = stack.broker(address, name="broker")
        layer = GRPCChannelLayer(address=address, publish_timeout=15)
        impatient = GRPCChannelLayer(address=address, publish_timeout=0.5)
        try:
            member = await layer.new_channel()
            await layer.group_add("survivors", member)
            await impatient.group_send("survivors", {"type": "m", "text": "before"})
            async with asyncio.timeout(2):
                assert (await layer.receive(member))["text"] == "before"

            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(5)
            killed_at = time.perf_counter()
            started = time.perf_counter()
            with pytest.raises(BrokerUnavailable, match="publish_timeout"):
                await impatient.group_send("survivors", {"type": "m", "text": "lost"})
            bound = time.perf_counter() - started

            sending = asyncio.create_task(
                layer.group_send("survivors", {"type": "m", "text": "during"})
            )
            await asyncio.sleep(0.5)
            assert not sending.done()
            await asyncio.to_thread(stack.broker, address, name="broker-restarted")
            restarted_at = time.perf_counter()
            await asyncio.wait_for(sending, 15)
            sent_at = time.perf_counter()
            async with asyncio.timeout(10):
                assert (await layer.receive(member))["text"] == "during"
            delivered_at = time.perf_counter()
            await layer.group_send("survivors", {"type": "m", "text": "after"})
            async with asyncio.timeout(5):
                assert (await layer.receive(member))["text"] == "after"
            await nothing_within(layer, member, 0.3)  # "lost" was withdrawn, not resent
            print(
                f"\nbroker SIGKILLed: a send with publish_timeout 0.5 raised after "
                f"{bound * 1000:.0f} ms; a send during the outage returned "
                f"{(sent_at - restarted_at) * 1000:.0f} ms after the restart and was "
                f"delivered {(delivered_at - killed_at) * 1000:.0f} ms after the kill"
            )
        finally:
            await layer.flush()
            await impatient.flush()
    finally:
        stack.stop_all()


# Channels servers and django-ws edges share groups ---------------------------------


async def test_edge_consumers_and_this_layer_share_groups(tmp_path: Path) -> None:
    """A consumer on a ``websockets_server`` edge and a channel of this layer are in one
    group: each gets the other's group messages, and each can ``send`` to the other's
    channel name."""
    stack = Stack(tmp_path)
    try:
        broker = stack.broker()
        edge = stack.edge(broker=broker.listen, workers=1)
        layer = GRPCChannelLayer(address=broker.listen)
        try:
            channel = await layer.new_channel()
            await layer.group_add("mixed", channel)
            ws, hello = await join(f"{edge.ws_url}/ws/group/mixed/")
            assert await layer.group_size("mixed") == 2
            await ws.send(json.dumps({"text": "from the edge"}))
            async with asyncio.timeout(5):
                event = await layer.receive(channel)
            assert event["type"] == "relay" and event["text"] == "from the edge"
            assert event["from"] == hello["channel"]
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["text"] == "from the edge"
            await layer.group_send(
                "mixed", {"type": "relay", "text": "from Channels", "from": channel}
            )
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["text"] == "from Channels"
            async with asyncio.timeout(5):
                assert (await layer.receive(channel))["text"] == "from Channels"
            await layer.send(hello["channel"], {"type": "relay", "text": "direct", "from": channel})
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["text"] == "direct"
            await ws.send(json.dumps({"text": "to you", "send_to": channel}))
            async with asyncio.timeout(5):
                assert (await layer.receive(channel))["text"] == "to you"
            await ws.close()
            print("\nedge consumer <-> Channels-layer channel: group both ways, send both ways")
        finally:
            await layer.flush()
    finally:
        stack.stop_all()
