"""Handlers run at once: with eager tasks (``WEBSOCKET_SERVER['EAGER_TASKS']``, Python
3.12+), a channel layer event that finds its consumer idle runs the handler where the
event arrives, as the consumer's task, instead of waking that task
(``ConnectionPort.eager_handlers``). The connection's rules must hold as before, through
a real worker, broker and clients, with eager tasks on and off:

- handlers run one at a time, in arrival order, in the consumer's context, and
  ``asyncio.current_task()`` in a handler is the consumer's own task, as in Channels;
- a handler that waits goes on in the consumer's task: ``asyncio.timeout`` cancels it,
  not the worker's link to the broker, also when it expires before that task has taken
  the handler up, and later events wait for it;
- a handler that raises closes with 1011, ``StopConsumer`` with 1000;
- a disconnect waits for the handler in progress;
- the loop watchdog names the consumer whose handler blocks the loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from support.clients import join
from support.processes import EdgeServer, Stack, wait_until

pytestmark = pytest.mark.timeout(90)

# Whether a worker with EAGER_TASKS on runs handlers at once here (3.11 has no eager tasks).
AT_ONCE = sys.version_info >= (3, 12)
MODES = pytest.mark.parametrize("eager", [True, False], ids=["eager-tasks", "no-eager-tasks"])


def rules_server(stack: Stack, tmp: Path, eager: bool, **env: str) -> EdgeServer:
    directory = tmp / "broker"
    directory.mkdir(mode=0o700)
    return stack.edge(
        workers=1,
        broker=f"unix:{directory / 'broker.sock'}",
        env={"TEST_EAGER_TASKS": "1" if eager else "0", **env},
    )


async def reports(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(count)]


async def sender_and_listener(
    server: EdgeServer, room: str, sender_room: str | None = None
) -> tuple[ClientConnection, ClientConnection, dict[str, Any]]:
    """A client that sends events (from ``sender_room``, else ``room``) and one in
    ``room`` that gets them, with the listener's greeting."""
    sender, _ = await join(f"{server.ws_url}/ws/rules/{sender_room or room}/")
    listener, hello = await join(f"{server.ws_url}/ws/rules/{room}/")
    return sender, listener, hello


def ran_at_once(got: list[dict[str, Any]]) -> list[int]:
    """The events whose handler ran where the event arrived, not from the consumer's
    loop; every handler runs as the consumer's own task either way."""
    assert all(report["own_task"] for report in got), got
    return [report["n"] for report in got if report["at_once"]]


@MODES
async def test_handlers_run_one_at_a_time_in_order_in_the_consumers_context(
    stack: Stack, tmp_path: Path, eager: bool
) -> None:
    server = rules_server(stack, tmp_path, eager)
    sender, listener, hello = await sender_and_listener(server, "order")
    # The first handler waits, so the others arrive while it runs; the sixth waits too.
    events = [{"n": n, "wait": 0.3 if n == 0 else 0.02 if n == 5 else 0} for n in range(20)]
    await sender.send(json.dumps(events))
    for ws in (sender, listener):
        got = await reports(ws, 20)
        assert [report["n"] for report in got] == list(range(20))
        assert not any(report["overlapped"] for report in got)
    # The listener was idle when the first event came: run at once, in its own
    # context, and the rest, queued behind it, by the consumer's task.
    assert {report["context"] for report in got} == {f"connect of {hello['channel']}"}
    at_once = ran_at_once(got)
    print(f"\neager tasks {'on' if eager else 'off'}: run at once: {at_once}, in order, alone")
    if eager and AT_ONCE:
        assert at_once[:1] == [0]
    else:
        assert at_once == []
    # Idle again: the next event runs at once too.
    await sender.send(json.dumps([{"n": 20}]))
    assert ran_at_once(await reports(listener, 1)) == ([20] if eager and AT_ONCE else [])


@MODES
async def test_a_handler_that_times_out_is_cancelled_alone(
    stack: Stack, tmp_path: Path, eager: bool
) -> None:
    server = rules_server(stack, tmp_path, eager)
    sender, listener, _ = await sender_and_listener(server, "timeout")
    await sender.send(json.dumps([{"n": 0, "timeout": 0.05}, {"n": 1}]))
    got = await reports(listener, 2)
    assert [(report["n"], report.get("timed_out")) for report in got] == [(0, True), (1, None)]
    # A timeout that expires at once: with eager tasks, before the consumer's task has
    # taken the waiting handler up (the cancellation reaches the handler all the same).
    await sender.send(json.dumps([{"n": 2, "timeout": 0}]))
    got += await reports(listener, 1)
    assert (got[2]["n"], got[2]["timed_out"]) == (2, True)
    assert ran_at_once(got) == ([0, 2] if eager and AT_ONCE else [])
    assert [report["own_task_after"] for report in got if "timed_out" in report] == [True, True]
    # The worker's link to the broker was not what the timeouts cancelled: it delivers on.
    await sender.send(json.dumps([{"n": 3}]))
    assert [report["n"] for report in await reports(listener, 1)] == [3]
    print(
        f"\neager tasks {'on' if eager else 'off'}: timed out: {got[0]} and {got[2]}; "
        "delivered after: 3"
    )


@MODES
async def test_a_handler_that_raises_or_stops_ends_its_connection(
    stack: Stack, tmp_path: Path, eager: bool
) -> None:
    server = rules_server(stack, tmp_path, eager)
    closes = {}
    for what in ("raise", "stop"):
        sender, listener, _ = await sender_and_listener(server, what, f"{what}-send")
        await sender.send(json.dumps([{"n": 0, what: True, "to": what}]))
        await asyncio.wait_for(listener.wait_closed(), 5)
        closes[what] = listener.close_code
        await sender.close()
    print(f"\neager tasks {'on' if eager else 'off'}: close codes {closes}")
    assert closes == {"raise": 1011, "stop": 1000}
    assert "RuntimeError: rule.event asked to raise" in server.log()


@MODES
async def test_a_disconnect_waits_for_the_handler_in_progress(
    stack: Stack, tmp_path: Path, eager: bool
) -> None:
    events_file = tmp_path / "events.txt"
    server = rules_server(stack, tmp_path, eager, TEST_EVENTS_FILE=str(events_file))
    sender, listener, hello = await sender_and_listener(server, "leave", "leave-send")
    await sender.send(json.dumps([{"n": 0, "wait": 0.5, "to": "leave"}]))
    wait_until(lambda: events_file.exists() and "started 0" in events_file.read_text(), 5, "start")
    await listener.close()
    channel = hello["channel"]
    wait_until(
        lambda: f"disconnect {channel}" in events_file.read_text(), 5, "the listener's disconnect"
    )
    lines = [line for line in events_file.read_text().splitlines() if channel in line]
    print(f"\neager tasks {'on' if eager else 'off'}: {lines}")
    assert lines == [f"started 0 {channel}", f"finished 0 {channel}", f"disconnect {channel}"]


@MODES
async def test_the_loop_watchdog_names_the_consumer_whose_handler_blocks(
    stack: Stack, tmp_path: Path, eager: bool
) -> None:
    server = rules_server(stack, tmp_path, eager)
    sender, listener, hello = await sender_and_listener(server, "block", "block-send")
    await sender.send(json.dumps([{"n": 0, "block": 1.0, "to": "block"}]))
    report = (await reports(listener, 1))[0]
    wait_until(lambda: "blocked for" in server.log(), 5, "the loop watchdog's warning")
    line = next(line for line in server.log().splitlines() if "blocked for" in line)
    print(
        f"\neager tasks {'on' if eager else 'off'}, run at once: {report['at_once']}: {line}"
    )
    assert f"by HandlerRulesConsumer on {hello['channel']} handling 'rule.event'" in line
    assert ran_at_once([report]) == ([0] if eager and AT_ONCE else [])
