"""An unchanged Channels app on the django-ws broker: the Channels tutorial's chat
(``examples/channels_tutorial``: Channels' ``AsyncWebsocketConsumer``,
``ProtocolTypeRouter``, ``AuthMiddlewareStack``, ``AllowedHostsOriginValidator``) under
``uvicorn --workers 2`` with ``CHANNEL_LAYERS`` = ``GRPCChannelLayer``, and a django-ws
``websockets_server`` on the same broker serving the django-ws tutorial consumer, which
joins the same group (``chat_<room>``). Members on both uvicorn workers and on the edge
chat in one room: every message reaches every member exactly once.

Which worker holds a connection is read from the kernel: the worker process that owns
the server end of the client's TCP connection (psutil), not guessed from the count.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from bench.processes import port_open

from support.processes import ROOT, Broker, Process, Stack, base_env, free_port, wait_until

pytest.importorskip("channels", reason="the Channels app needs the bench extra (channels)")
pytest.importorskip("uvicorn", reason="the Channels app needs the bench extra (uvicorn)")

pytestmark = [pytest.mark.timeout(120)]

CHANNELS_TUTORIAL = ROOT / "examples" / "channels_tutorial"
WORKERS = 2
MIN_PER_WORKER = 2  # members on each uvicorn worker
MAX_CONNECTIONS = 40  # opened before giving up on reaching both workers
EDGE_MEMBERS = 2
MESSAGES_EACH = 3


@dataclass
class Uvicorn(Process):
    port: int = 0

    def worker_pids(self) -> list[int]:
        """Each worker logs ``Started server process [PID]`` (the supervisor says
        ``parent process``)."""
        return [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", self.log())]

    def wait_ready(self, workers: int, timeout: float = 60.0) -> None:
        def check() -> bool:
            if not self.alive():
                raise RuntimeError(f"uvicorn exited early:\n{self.log()}")
            started = self.log().count("Application startup complete.")
            return started >= workers and port_open("127.0.0.1", self.port)

        wait_until(check, timeout, f"uvicorn's {workers} workers on port {self.port}")


@pytest.fixture
def uvicorn_app(stack: Stack, tmp_path: Path) -> Iterator[tuple[Uvicorn, Broker]]:
    """The broker and the Channels tutorial under ``uvicorn --workers 2`` on it."""
    broker = stack.broker()
    port = free_port()
    server = Uvicorn(
        args=[
            sys.executable,
            "-m",
            "uvicorn",
            "mysite.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(WORKERS),
            "--log-level",
            "info",
        ],
        log_path=tmp_path / "uvicorn.log",
        env=base_env(
            DJANGO_SETTINGS_MODULE="mysite.settings",
            TUTORIAL_BROKER=broker.listen,
            TUTORIAL_DATA_DIR=str(tmp_path),
        ),
        cwd=CHANNELS_TUTORIAL,
        port=port,
    )
    stack.processes.append(server)  # stopped by the stack, also when never ready
    server.start()
    server.wait_ready(WORKERS)
    yield server, broker


def fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status), response.read()


def owner_pid(ws: ClientConnection, server_port: int, pids: list[int]) -> int:
    """The worker process holding the server end of ``ws``'s TCP connection."""
    client_port = ws.local_address[1]
    for pid in pids:
        process = psutil.Process(pid)
        connections = (
            process.net_connections(kind="tcp")
            if hasattr(process, "net_connections")
            else process.connections(kind="tcp")
        )
        for conn in connections:
            if (
                conn.laddr
                and conn.raddr
                and (conn.laddr.port, conn.raddr.port)
                == (
                    server_port,
                    client_port,
                )
            ):
                return pid
    raise AssertionError(f"no worker of {pids} holds the connection from port {client_port}")


async def test_members_on_both_uvicorn_workers_and_an_edge_share_a_room(
    stack: Stack, uvicorn_app: tuple[Uvicorn, Broker]
) -> None:
    server, broker = uvicorn_app
    edge = stack.edge(broker=broker.listen, workers=1, name="edge")
    pids = server.worker_pids()
    assert len(pids) == WORKERS, server.log()
    room = "lobby"
    channels_url = f"ws://127.0.0.1:{server.port}/ws/chat/{room}/"
    origin = Origin(f"http://127.0.0.1:{server.port}")

    # The whole tutorial is served: its room page (Django over uvicorn's HTTP) ...
    status, body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{server.port}/chat/{room}/")
    assert status == 200 and b"/ws/chat/" in body
    # ... and its websocket stack: AllowedHostsOriginValidator refuses a foreign origin.
    with pytest.raises(InvalidStatus) as refused:
        await connect(channels_url, origin=Origin("http://evil.example"), open_timeout=10)
    assert refused.value.response.status_code == 403

    members: dict[str, ClientConnection] = {}
    per_worker: Counter[int] = Counter()
    try:
        while min(per_worker[pid] for pid in pids) < MIN_PER_WORKER:
            if sum(per_worker.values()) >= MAX_CONNECTIONS:
                raise AssertionError(
                    f"{MAX_CONNECTIONS} connections did not reach both workers: {dict(per_worker)}"
                )
            ws = await connect(channels_url, origin=origin, open_timeout=10)
            pid = owner_pid(ws, server.port, pids)
            per_worker[pid] += 1
            members[f"uvicorn-{pid}-{per_worker[pid]}"] = ws
        for n in range(EDGE_MEMBERS):
            # The django-ws port of the same tutorial consumer: group chat_<room>.
            members[f"edge-{n}"] = await connect(
                f"{edge.ws_url}/ws/chat/async/{room}/", open_timeout=10
            )
        print(f"\nmembers: {dict(per_worker)} per uvicorn worker pid, {EDGE_MEMBERS} on the edge")

        # Fan-out per process: the broker sees one subscriber per process (two uvicorn
        # workers and the edge's one worker), not one per member.
        group_edges = dict(broker.stats(include_groups=True).group_edges)
        print(f"broker: subscribed processes per group {group_edges}")
        assert group_edges == {f"chat_{room}": WORKERS + 1}

        sent = [f"{name}#{i}" for name in members for i in range(MESSAGES_EACH)]
        started = time.monotonic()

        async def speak(name: str, ws: ClientConnection) -> None:
            for i in range(MESSAGES_EACH):
                await ws.send(json.dumps({"message": f"{name}#{i}"}))

        async def listen(ws: ClientConnection) -> Counter[str]:
            got: Counter[str] = Counter()
            while sum(got.values()) < len(sent):
                got[json.loads(await asyncio.wait_for(ws.recv(), 15))["message"]] += 1
            # Anything more within half a second would be a duplicate or a stray.
            try:
                extra = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                pass
            else:
                got[json.loads(extra)["message"]] += 1
            return got

        listeners = [asyncio.create_task(listen(ws)) for ws in members.values()]
        await asyncio.gather(*(speak(name, ws) for name, ws in members.items()))
        received = await asyncio.gather(*listeners)
        elapsed = time.monotonic() - started
        total = sum(sum(got.values()) for got in received)
        print(
            f"{len(sent)} messages sent by {len(members)} members, {total} deliveries "
            f"received (expected {len(sent) * len(members)}) in {elapsed:.2f}s"
        )
        stats = broker.stats()
        print(f"broker: {stats.published} published, {stats.delivered} delivered to processes")
        wanted = Counter(sent)
        for name, got in zip(members, received, strict=True):
            assert got == wanted, (name, got - wanted, wanted - got)
        assert (stats.published, stats.delivered) == (len(sent), len(sent) * (WORKERS + 1))

        # The members of one worker leave: that worker drops its subscription, and the
        # others still get every message (the edge's reaches the other worker's members).
        gone = pids[0]
        leaving = [name for name in members if name.startswith(f"uvicorn-{gone}-")]
        await asyncio.gather(*(members.pop(name).close() for name in leaving))
        wait_until(
            lambda: dict(broker.stats(include_groups=True).group_edges) == {f"chat_{room}": WORKERS},
            10,
            f"worker {gone} to unsubscribe once its members left",
        )
        await members["edge-0"].send(json.dumps({"message": "after-leave"}))
        for name, ws in members.items():
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))["message"]
            assert message == "after-leave", name
        print(
            f"{len(leaving)} members of worker {gone} left: the broker lists "
            f"{WORKERS} subscribed processes, and the {len(members)} left got the next message"
        )
    finally:
        await asyncio.gather(*(ws.close() for ws in members.values()), return_exceptions=True)
