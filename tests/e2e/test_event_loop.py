"""WEBSOCKET_SERVER['EVENT_LOOP'] and ['EAGER_TASKS'] through a real server: each worker
and the embedded broker say, from the loop they run, which loop that is; a consumer
still echoes and still gets group messages through the broker on it."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from support.clients import join
from support.processes import Stack, wait_until

pytestmark = pytest.mark.timeout(90)

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
HAVE_EAGER = sys.version_info >= (3, 12)

WORKER_LINE = re.compile(
    r"worker (\d+) runs on the (\w+) event loop \(([^;]+); WEBSOCKET_SERVER\['EVENT_LOOP'\] = "
    r"'(\w+)'\), eager tasks (on|off(?: \([^)]*\))?), open file limit (\d+) \(hard (\d+)\)"
)
BROKER_LINE = re.compile(
    r"broker \(pid (\d+)\) runs on the (\w+) event loop \(([^;]+); --event-loop (\w+)\)"
)


def private_broker(tmp: Path) -> str:
    """An embedded broker of this test's own, on a socket in a private directory: a
    broker already serving at the project's default address would be reused, and its
    loop is not this test's."""
    directory = tmp / "broker"
    directory.mkdir(mode=0o700)
    return f"unix:{directory / 'broker.sock'}"


def worker_lines(log: str) -> list[re.Match[str]]:
    return list(WORKER_LINE.finditer(log))


async def echo_and_group_round_trip(ws_url: str) -> None:
    """An echo, then a group message from one member that both members receive."""
    async with connect(f"{ws_url}/ws/echo/") as echo:
        await echo.send("ping through the loop")
        answer = json.loads(await asyncio.wait_for(echo.recv(), 5))
        assert answer["echo"] == "ping through the loop"
    a, _ = await join(f"{ws_url}/ws/group/loop-room/")
    b, _ = await join(f"{ws_url}/ws/group/loop-room/")
    try:
        await a.send(json.dumps({"text": "to the group"}))
        for member in (a, b):
            got = json.loads(await asyncio.wait_for(member.recv(), 5))
            assert got["text"] == "to the group" and got["group"] == "loop-room"
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("choice", ["auto", "asyncio", "uvloop"])
async def test_workers_and_embedded_broker_run_the_chosen_loop(
    stack: Stack, tmp_path: Path, choice: str
) -> None:
    if choice == "uvloop" and not HAVE_UVLOOP:
        pytest.skip("uvloop is not installed (the test extra installs it)")
    expected = "asyncio" if choice == "asyncio" or not HAVE_UVLOOP else "uvloop"
    server = stack.edge(
        workers=2,
        broker=private_broker(tmp_path),
        env={"TEST_EVENT_LOOP": choice, "DJANGO_WS_LOG_LEVEL": "INFO"},
    )
    wait_until(lambda: len(worker_lines(server.log())) >= 2, 10, "both workers' loop lines")
    wait_until(lambda: BROKER_LINE.search(server.log()) is not None, 10, "the broker's loop line")
    lines = worker_lines(server.log())
    for line in lines:
        print(f"\n{line.group(0)}")
        assert line.group(2) == expected, line.group(0)
        assert line.group(4) == choice
        if expected == "uvloop":
            assert line.group(3).startswith("uvloop ")
        # The soft file limit was raised to the hard one.
        assert line.group(6) == line.group(7), line.group(0)
    assert {int(line.group(1)) for line in lines} == set(server.worker_pids())
    broker = BROKER_LINE.search(server.log())
    assert broker is not None
    print(broker.group(0))
    assert broker.group(2) == expected, broker.group(0)
    assert broker.group(4) == choice  # the edge passed its setting to the embedded broker
    await echo_and_group_round_trip(server.ws_url)


async def test_unknown_loop_stops_the_command_naming_the_setting(
    stack: Stack, tmp_path: Path
) -> None:
    server = stack.edge(
        workers=1, broker=private_broker(tmp_path), env={"TEST_EVENT_LOOP": "trio"}, wait=False
    )
    wait_until(lambda: not server.alive(), 30, "the command to stop")
    log = server.log()
    print(f"\n{log.strip().splitlines()[-3:]}")
    assert "WEBSOCKET_SERVER['EVENT_LOOP'] must be one of 'auto', 'asyncio', 'uvloop'" in log
    assert "not 'trio'" in log
    assert server.wait(5) != 0
    assert not worker_lines(log)


@pytest.mark.parametrize("eager", [True, False])
async def test_eager_tasks_setting_reaches_the_workers(
    stack: Stack, tmp_path: Path, eager: bool
) -> None:
    server = stack.edge(
        workers=1,
        broker=private_broker(tmp_path),
        env={"TEST_EAGER_TASKS": "1" if eager else "0", "TEST_EVENT_LOOP": "asyncio"},
    )
    wait_until(lambda: len(worker_lines(server.log())) >= 1, 10, "the worker's loop line")
    line = worker_lines(server.log())[0]
    print(f"\nPython {sys.version.split()[0]}: {line.group(0)}")
    if not eager:
        assert line.group(5) == "off"
    elif HAVE_EAGER:
        assert line.group(5) == "on"
    else:
        # 3.11: a documented no-op, said in the line.
        assert line.group(5).startswith("off (WEBSOCKET_SERVER['EAGER_TASKS'] is set, but Python")
    await echo_and_group_round_trip(server.ws_url)


@pytest.mark.skipif(not (HAVE_EAGER and HAVE_UVLOOP), reason="needs Python 3.12+ and uvloop")
async def test_eager_tasks_on_uvloop(stack: Stack, tmp_path: Path) -> None:
    server = stack.edge(
        workers=1,
        broker=private_broker(tmp_path),
        env={"TEST_EAGER_TASKS": "1", "TEST_EVENT_LOOP": "uvloop"},
    )
    wait_until(lambda: len(worker_lines(server.log())) >= 1, 10, "the worker's loop line")
    line = worker_lines(server.log())[0]
    print(f"\n{line.group(0)}")
    assert (line.group(2), line.group(5)) == ("uvloop", "on")
    await echo_and_group_round_trip(server.ws_url)


def test_uvloop_asked_for_but_missing_is_an_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django_ws_proto.event_loop import EventLoopUnavailable, resolve_event_loop

    # None in sys.modules is how Python marks a module that cannot be imported.
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(EventLoopUnavailable) as missing:
        resolve_event_loop("uvloop", "WEBSOCKET_SERVER['EVENT_LOOP']")
    print(f"\n{missing.value}")
    assert str(missing.value).startswith("WEBSOCKET_SERVER['EVENT_LOOP'] is 'uvloop' but uvloop")
    assert "pip install 'django-ws-grpc[uvloop]'" in str(missing.value)
    # "auto" falls back to asyncio quietly.
    assert resolve_event_loop("auto", "WEBSOCKET_SERVER['EVENT_LOOP']").name == "asyncio"


def test_broker_flag_refuses_an_unknown_loop_naming_the_flag(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "django_ws_broker",
            "--listen",
            f"unix:{tmp_path / 'b.sock'}",
            "--event-loop",
            "trio",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    print(f"\n{completed.stderr.strip()}")
    assert completed.returncode != 0
    assert "--event-loop must be one of 'auto', 'asyncio', 'uvloop', not 'trio'" in completed.stderr
