"""WEBSOCKET_SERVER['BROKER_IN_WORKER'] through a real server: with one worker, the
embedded broker runs inside it (no broker process), the project's other processes still
reach it over its unix socket, CONFIG's broker settings apply to it, and a worker
replacement loses the history, which reconnecting members are told. With more workers
the setting is declined, saying why."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from websockets.asyncio.client import ClientConnection

from support.clients import join
from support.processes import TEST_PROJECT, Stack, base_env, process_tree, wait_until
from support.resources import scrape, total

pytestmark = [pytest.mark.timeout(120)]

PUBLISHER = """
import django
django.setup()
from asgiref.sync import async_to_sync
from django_ws_client.transport import get_channel_layer
async_to_sync(get_channel_layer().group_send)(
    "inside", {"type": "room.message", "text": "from a view"}
)
print("sent")
"""


@pytest.fixture
def own_tmp() -> Iterator[Path]:
    """A temp dir of this test's own (short: a unix socket path has a length limit), so
    the embedded broker's socket is this server's and no other test's."""
    path = Path(tempfile.mkdtemp(prefix="django-ws-inworker-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def environment(tmp: Path, **extra: str) -> dict[str, str]:
    unset = {"TEST_BROKER": "", "TEST_BROKERS": "", "DJANGO_WS_BROKERS": ""}
    return {**unset, "TMPDIR": str(tmp), "XDG_RUNTIME_DIR": "", **extra}


def command_lines(pid: int) -> list[str]:
    lines = []
    for child in process_tree(pid):
        try:
            lines.append(" ".join(psutil.Process(child).cmdline()))
        except psutil.NoSuchProcess:
            continue
    return lines


async def next_json(ws: ClientConnection, timeout: float = 20) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_one_worker_hosts_the_broker_that_other_processes_still_reach(
    stack: Stack, own_tmp: Path
) -> None:
    env = environment(own_tmp, TEST_BROKER_IN_WORKER="1", TEST_HISTORY_SIZE="3")
    server = stack.edge(workers=1, env=env)
    processes = command_lines(server.pid)
    brokers = [line for line in processes if "django_ws_broker" in line]
    workers = [line for line in processes if "django_ws_edge.worker" in line]
    print(f"\nprocesses: {len(processes)} ({len(workers)} worker, {len(brokers)} broker)")
    assert "the embedded broker runs inside the worker" in server.log()
    assert (len(workers), brokers) == (1, [])

    url = f"{server.ws_url}/ws/room/inside/"
    sender, _ = await join(url)
    listener, _ = await join(url)
    positions = []
    for seq in range(6):
        await sender.send(f"m {seq}")
        await next_json(sender)
        positions.append((await next_json(listener))["position"])

    # A plain Django process (a view, a management command) publishes over the socket.
    view = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", PUBLISHER],
        cwd=TEST_PROJECT,
        env=base_env(DJANGO_SETTINGS_MODULE="testproject.settings", **env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert view.returncode == 0, view.stderr
    from_view = await next_json(listener)
    print(f"a view's group_send reached the member: {from_view['text']!r}")
    assert from_view["text"] == "from a view"

    # CONFIG['history_size'] = 3 reaches the broker inside the worker.
    within, _ = await join(f"{url}?since={positions[3]}")
    caught_up = [(await next_json(within))["text"] for _ in range(3)]
    beyond, _ = await join(f"{url}?since={positions[2]}")
    too_old = await next_json(beyond)
    print(f"3 kept: from m 3 got {caught_up}; from m 2: {too_old}")
    assert caught_up == ["m 4", "m 5", "from a view"]
    assert too_old["gap"] == "too_old"

    # The documented cost: a replaced worker starts a new broker, so its history is
    # gone, and a member coming back is told so instead of missing messages silently.
    worker = server.worker_pids()[0]
    psutil.Process(worker).send_signal(signal.SIGKILL)
    await asyncio.to_thread(
        wait_until,
        lambda: server.readyz()[0] == 200 and server.worker_pids() not in ([], [worker]),
        30,
        "a replacement worker",
    )
    back, _ = await join(f"{url}?since={from_view['position']}")
    gap = await next_json(back)
    await sender.close()
    sender, _ = await join(url)
    await sender.send("after the replacement")
    after = await next_json(back)

    def lost() -> float:
        samples = scrape(f"http://127.0.0.1:{server.health_port}/metrics")
        return total(samples, "django_ws_edge_deliveries_lost_total", reason="broker_lost")

    # Workers write their counts for /metrics every 100 ms or so.
    await asyncio.to_thread(wait_until, lambda: lost() >= 1, 10, "the loss to be counted")
    print(
        f"after SIGKILL of worker {worker}: {gap}, then {after['text']!r}; "
        f'django_ws_edge_deliveries_lost_total{{reason="broker_lost"}} = {lost():g}'
    )
    assert gap["gap"] == "history_lost"
    assert after["text"] == "after the replacement"
    assert not [line for line in command_lines(server.pid) if "django_ws_broker" in line]
    for ws in (sender, listener, within, beyond, back):
        await ws.close()


async def test_with_two_workers_the_broker_keeps_its_own_process(
    stack: Stack, own_tmp: Path
) -> None:
    server = stack.edge(workers=2, env=environment(own_tmp, TEST_BROKER_IN_WORKER="1"))
    warning = next(line for line in server.log().splitlines() if "BROKER_IN_WORKER" in line)
    print(f"\n{warning.split('WARNING ', 1)[-1]}")
    assert "this server runs 2 workers (it needs -w 1)" in warning
    brokers = [line for line in command_lines(server.pid) if "django_ws_broker" in line]
    assert len(brokers) == 1
    # And the workers' rooms work through it as ever.
    url = f"{server.ws_url}/ws/room/outside/"
    first, _ = await join(url)
    second, _ = await join(url)
    await first.send("hello")
    assert (await next_json(second))["text"] == "hello"
    await first.close()
    await second.close()
