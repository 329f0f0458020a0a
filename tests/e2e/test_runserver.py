"""``manage.py runserver`` serves pages and websockets on one address, as Channels'
daphne-backed runserver does, for a project that kept its Channels settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support.processes import TEST_PROJECT, Stack, none_running, process_tree, wait_until

pytestmark = pytest.mark.timeout(120)


def channels_project_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "TEST_DATABASE": str(tmp_path / "db.sqlite3"),
        "TEST_CHANNEL_LAYERS": "inmemory",  # CHANNEL_LAYERS as the Channels project had it
        "TMPDIR": str(tmp_path),  # the embedded broker and edge sockets: private to the test
    }


def post(url: str, text: str) -> int:
    request = urllib.request.Request(url, data=f"text={text}".encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


async def hello_pid(ws_url: str) -> int:
    async with connect(f"{ws_url}/ws/group/probe/") as ws:
        return int(json.loads(await ws.recv())["pid"])


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=TEST_PROJECT,
        env={**os.environ, **env},
        check=True,
    )


async def test_pages_and_websockets_on_one_port_with_autoreload(stack: Stack, tmp_path: Path) -> None:
    env = channels_project_env(tmp_path)
    await asyncio.to_thread(migrate, env)
    started = time.monotonic()
    server = stack.runserver(project=TEST_PROJECT, env=env)
    async with connect(f"{server.ws_url}/ws/group/lobby/", origin=server.url) as ws:
        first = json.loads(await ws.recv())
        print(f"websocket open on the pages' port {server.port} after {time.monotonic() - started:.1f}s")
        # A view on the same address publishes through the embedded broker to the socket.
        status = await asyncio.to_thread(post, f"{server.url}/publish/lobby/", "from-a-view")
        assert status == 200
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["text"] == "from-a-view"
    # A handshake the edge refuses is answered, and logged, with the edge's status.
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{server.ws_url}/ws/nowhere/")
    assert refused.value.response.status_code == 404
    # The development server writes its access line after answering: wait for it.
    await asyncio.to_thread(
        wait_until,
        lambda: '"GET /ws/nowhere/ HTTP/1.1" 404' in server.log(),
        10,
        "the refused handshake's access log line",
    )
    log = server.log()
    assert '"GET /ws/group/lobby/ HTTP/1.1" 101' in log
    assert '"POST /publish/lobby/ HTTP/1.1" 200' in log

    # Autoreload: a consumer edited restarts the websocket server with the pages.
    before = process_tree(server.pid)
    touched = time.monotonic()
    new_pid = first["pid"]
    deadline = time.monotonic() + 60
    while new_pid == first["pid"]:
        assert time.monotonic() < deadline, f"no restart after a code change:\n{server.log()}"
        # Touched again each round: the reloader notices a change only to a file it had
        # already seen, and it may first see this one after the first touch.
        os.utime(TEST_PROJECT / "testproject" / "consumers.py")
        with contextlib.suppress(Exception):  # restarting: refused, 503 or closed
            new_pid = await asyncio.wait_for(hello_pid(server.ws_url), 5)
        await asyncio.sleep(0.5)
    print(f"reloaded: websocket worker pid {first['pid']} -> {new_pid} in {time.monotonic() - touched:.1f}s")
    assert none_running([pid for pid in before if pid not in process_tree(server.pid)])

    tree = process_tree(server.pid)
    server.stop()
    wait_until(lambda: none_running(tree), 20, "runserver and its websocket server to exit")
    print(f"CONTROL-C stopped all {len(tree)} processes (runserver, reloader child, edge, workers, broker)")
