"""The example chat project, as a new user runs it: real sessions, permissions, workers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support.example import example_env, prepare
from support.processes import EXAMPLE_PROJECT, Stack

pytestmark = pytest.mark.timeout(120)

async def test_example_chat_sessions_permissions_and_messages(stack: Stack, tmp_path: Path) -> None:
    sessions = prepare(tmp_path)
    server = stack.edge(
        workers=2,
        project=EXAMPLE_PROJECT,
        settings="chat_project.settings",
        env=example_env(tmp_path),
    )
    url = f"{server.ws_url}/ws/internalchat/"
    origin = "http://localhost:8001"

    def as_user(name: str) -> dict[str, str]:
        return {"Cookie": f"sessionid={sessions[name]}"}

    # Anonymous, a user without the permission, and a foreign origin are all refused.
    for headers, origin_header in (
        ({}, origin),
        (as_user("mallory"), origin),
        (as_user("alice"), "http://evil.example"),
    ):
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, additional_headers=headers, origin=origin_header)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403

    alice = await connect(url, additional_headers=as_user("alice"), origin=origin)  # type: ignore[arg-type]
    # Who is online comes first: alice alone in the room.
    online = await chat_message(alice, "online")
    assert [(u["name"], u["connections"]) for u in online["online"]] == [("alice", 1)]
    bob = await connect(url, additional_headers=as_user("bob"), origin=origin)  # type: ignore[arg-type]
    online = await chat_message(bob, "online")
    assert sorted(u["name"] for u in online["online"]) == ["alice", "bob"]
    # ... and alice's page hears that bob came in.
    joined = await chat_message(alice, "presence")
    assert joined == {"presence": "join", "user": {"id": joined["user"]["id"], "name": "bob"}}
    lobby = await connect(
        f"{server.ws_url}/ws/chat/lobby/", additional_headers=as_user("bob"), origin=origin
    )  # type: ignore[arg-type]
    print(f"online in the room when bob came: {online['online']}; alice's page got {joined}")
    # No wait needed: group_add in connect() returns once the broker has the subscription.
    await alice.send("hello bob")
    got = await chat_message(bob, "message")
    # Each message carries its position in the room, for catching up after a reconnect.
    assert got.pop("position")
    assert got == {"from": "alice", "message": "hello bob"}
    await bob.send("hi alice")
    got = await chat_message(alice, "message")
    assert got.pop("position")
    assert got == {"from": "bob", "message": "hi alice"}
    # Senders do not get their own messages back (group_send's exclude), and other
    # rooms hear nothing.
    for ws in (alice, lobby):
        with pytest.raises(asyncio.TimeoutError):
            await chat_message(ws, "message", timeout=0.5)
    # Bob leaves: alice's page hears it once his grace period is over.
    await bob.close()
    left = await chat_message(alice, "presence", timeout=15)
    assert left["presence"] == "leave" and left["user"]["name"] == "bob"
    for ws in (alice, lobby):
        await ws.close()


async def chat_message(ws: Any, key: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message carrying ``key``, skipping others (presence updates)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), deadline - loop.time()))
        if key in message or (key == "message" and "message" in message):
            return message  # type: ignore[no-any-return]
