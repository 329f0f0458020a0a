"""Starting and stopping websockets_server: embedded broker, unix sockets, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from websockets.asyncio.client import connect, unix_connect

from support.clients import join
from support.processes import (
    TEST_PROJECT,
    Stack,
    base_env,
    free_port,
    none_running,
    process_tree,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)


async def test_embedded_broker_starts_on_an_unanswered_unix_path_and_stops_with_the_server(
    stack: Stack, tmp_path: Path
) -> None:
    sock = tmp_path / "embedded.sock"
    server = stack.edge(workers=1, broker=f"unix:{sock}")
    wait_until(lambda: "embedded broker (pid" in server.log(), 5, "the embedded broker log line")
    children = psutil.Process(server.pid).children(recursive=True)
    brokers = [p for p in children if "django_ws_broker" in " ".join(p.cmdline())]
    assert len(brokers) == 1 and sock.is_socket()
    async with connect(f"{server.ws_url}/ws/group/g/") as ws:
        hello = json.loads(await ws.recv())
        await ws.send(json.dumps({"text": "through the embedded broker"}))
        assert json.loads(await ws.recv())["text"] == "through the embedded broker"
        assert hello["pid"] in server.worker_pids()
    server.stop()
    assert server.popen is not None and server.popen.returncode == 0
    assert not brokers[0].is_running() or brokers[0].status() == psutil.STATUS_ZOMBIE
    assert not sock.exists()


async def test_a_running_broker_on_the_unix_path_is_used(stack: Stack, tmp_path: Path) -> None:
    broker = stack.broker(f"unix:{tmp_path / 'shared.sock'}")
    server = stack.edge(workers=1, broker=broker.listen)
    assert "using the broker already serving" in server.log()
    assert not [
        p
        for p in psutil.Process(server.pid).children(recursive=True)
        if "django_ws_broker" in " ".join(p.cmdline())
    ]
    assert len(broker.stats().edge_ids) == 1


def test_a_tcp_broker_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    env = base_env(
        DJANGO_SETTINGS_MODULE="testproject.settings",
        TEST_BROKER=f"127.0.0.1:{free_port()}",
        TEST_CONNECT_TIMEOUT="1",
        TEST_DATABASE=str(tmp_path / "db.sqlite3"),
    )
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "websockets_server",
            "-b",
            f"127.0.0.1:{free_port()}",
            "-w",
            "1",
        ],
        cwd=TEST_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        "WEBSOCKET_TRANSPORT_BACKENDS['default']['CONFIG']: no broker answers at 0:"
        in result.stderr
    )


async def test_serving_on_a_unix_socket(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    server = stack.edge(workers=2, bind=f"unix:{path}")
    pids = set()
    for _ in range(20):
        async with unix_connect(str(path), uri="ws://localhost/ws/group/u/") as ws:
            pids.add(json.loads(await ws.recv())["pid"])
        if len(pids) == 2:
            break
    assert pids <= set(server.worker_pids()) and pids
    server.stop()
    assert not path.exists()


async def test_sigterm_closes_with_1001_runs_disconnect_and_leaves_no_process(stack: Stack) -> None:
    server = stack.edge(workers=2)
    clients = []
    for i in range(6):
        ws = await connect(f"{server.ws_url}/ws/group/g{i % 2}/")
        json.loads(await ws.recv())
        clients.append(ws)
    tree = process_tree(server.pid)
    assert len(tree) >= 4  # supervisor, embedded broker, two workers
    server.signal(signal.SIGTERM)
    for ws in clients:
        await asyncio.wait_for(ws.wait_closed(), 15)
        assert ws.close_code == 1001
    assert server.wait(20) == 0
    disconnects = [line for line in server.events() if line.startswith("disconnect ")]
    assert len(disconnects) == 6 and all(line.endswith(" 1001") for line in disconnects)
    wait_until(lambda: none_running(tree), 10, "every process of the server to exit")


def test_sigterm_while_waiting_for_brokers_stops_at_once(stack: Stack) -> None:
    server = stack.edge(
        workers=1,
        broker=f"127.0.0.1:{free_port()}",  # nothing answers there
        env={"TEST_CONNECT_TIMEOUT": "60"},
        wait=False,
    )
    wait_until(
        lambda: "waiting up to 60s for 1 broker" in server.log(),
        20,
        "the server to wait for brokers",
    )
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0
    print(f"\nstopped {time.monotonic() - started:.2f}s after SIGTERM while waiting for brokers")
    assert time.monotonic() - started < 5


async def test_supervisor_sigkill_leaves_no_process_and_the_next_start_serves_afresh(
    stack: Stack, tmp_path: Path
) -> None:
    sock = tmp_path / "embedded.sock"
    server = stack.edge(workers=2, broker=f"unix:{sock}")
    clients = [(await join(f"{server.ws_url}/ws/group/g{i}/"))[0] for i in range(4)]
    tree = process_tree(server.pid)
    children = [pid for pid in tree if pid != server.pid]
    broker_pids = [
        p.pid for p in psutil.Process(server.pid).children() if "django_ws_broker" in p.cmdline()
    ]
    assert len(children) >= 3 and len(broker_pids) == 1  # two workers, the embedded broker
    try:
        killed = time.monotonic()
        server.signal(signal.SIGKILL)
        # Polled without blocking this loop: the clients must answer the workers' closes.
        while time.monotonic() - killed < 10:
            if none_running(children):
                break
            await asyncio.sleep(0.02)
        gone_after = time.monotonic() - killed
        assert none_running(children), "children of the killed supervisor still running"
        closes = []
        for ws in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.wait_closed(), 5)
            closes.append(ws.close_code)
        print(
            f"\nsupervisor SIGKILLed: its {len(children)} children (workers, embedded broker) "
            f"gone after {gone_after:.2f}s; client close codes {closes}"
        )
        assert gone_after < 10
    finally:
        for pid in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
    again = stack.edge(workers=1, broker=f"unix:{sock}", name="edge-again")
    wait_until(lambda: "embedded broker (pid" in again.log(), 5, "a fresh embedded broker")
    log = again.log()
    assert "using the broker already serving" not in log
    new_brokers = [
        p.pid for p in psutil.Process(again.pid).children() if "django_ws_broker" in p.cmdline()
    ]
    assert len(new_brokers) == 1 and new_brokers != broker_pids
    async with connect(f"{again.ws_url}/ws/group/g/") as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"text": "after the crash"}))
        assert json.loads(await ws.recv())["text"] == "after the crash"
    stale = [line for line in log.splitlines() if "stale embedded broker socket" in line]
    print(f"next start: fresh embedded broker pid {new_brokers[0]}; {stale or 'no stale socket'}")


def test_a_dead_servers_answering_broker_socket_is_not_reused(stack: Stack, tmp_path: Path) -> None:
    """An embedded broker that still answers when the next start comes (a server
    restarted at once after a crash) is not used: its socket is removed first."""
    sock = tmp_path / "embedded.sock"
    orphan = stack.broker(f"unix:{sock}", name="orphan")  # stands for the orphaned broker
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    Path(f"{sock}.owner").write_text(json.dumps({"supervisor": dead.pid, "broker": orphan.pid}))
    server = stack.edge(workers=1, broker=f"unix:{sock}")
    log = server.log()
    line = next(line for line in log.splitlines() if "stale embedded broker socket" in line)
    print(f"\n{line}")
    assert "using the broker already serving" not in log
    brokers = [
        p.pid for p in psutil.Process(server.pid).children() if "django_ws_broker" in p.cmdline()
    ]
    assert len(brokers) == 1 and brokers[0] != orphan.pid  # ready: linked to its own broker


async def test_a_worker_blocked_when_the_supervisor_is_killed_still_exits(
    stack: Stack, tmp_path: Path
) -> None:
    """A blocked loop cannot drain; the lifeline's thread exits the worker hard."""
    server = stack.edge(
        workers=1,
        broker=f"unix:{tmp_path / 'embedded.sock'}",
        extra_args=("--wedged-timeout", "60"),
    )
    children = [pid for pid in process_tree(server.pid) if pid != server.pid]
    ws = await connect(f"{server.ws_url}/ws/faulty/block/")
    await ws.send("60")  # blocks the worker's loop for a minute
    wait_until(lambda: "blocked for" in server.log(), 5, "the loop watchdog's warning")
    try:
        killed = time.monotonic()
        server.signal(signal.SIGKILL)
        wait_until(lambda: none_running(children), 10, "every child of the killed supervisor")
        print(f"\nblocked worker and broker gone {time.monotonic() - killed:.2f}s after SIGKILL")
    finally:
        for pid in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ("--heartbeat-timeout", "0"),
            {},
            "--heartbeat-timeout (or WEBSOCKET_SERVER['HEARTBEAT_TIMEOUT']) must be more than 0",
        ),
        (
            (),
            {"TEST_HEARTBEAT_TIMEOUT": "5", "TEST_WEDGED_TIMEOUT": "1"},
            "--wedged-timeout (or WEBSOCKET_SERVER['WEDGED_TIMEOUT']) = 1s must not be shorter",
        ),
    ],
)
def test_bad_heartbeat_timeouts_are_a_clear_error(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "websockets_server", "-b", f"127.0.0.1:{free_port()}", *args],
        cwd=TEST_PROJECT,
        env=base_env(
            DJANGO_SETTINGS_MODULE="testproject.settings",
            TEST_DATABASE=str(tmp_path / "db.sqlite3"),
            **env,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
