"""The example chat project, as a new user runs it: real sessions, permissions, workers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

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
    bob = await connect(url, additional_headers=as_user("bob"), origin=origin)  # type: ignore[arg-type]
    lobby = await connect(
        f"{server.ws_url}/ws/chat/lobby/", additional_headers=as_user("bob"), origin=origin
    )  # type: ignore[arg-type]
    # No wait needed: group_add in connect() returns once the broker has the subscription.
    await alice.send("hello bob")
    got = json.loads(await asyncio.wait_for(bob.recv(), 5))
    # Each message carries its position in the room, for catching up after a reconnect.
    assert got.pop("position")
    assert got == {"from": "alice", "message": "hello bob"}
    await bob.send("hi alice")
    got = json.loads(await asyncio.wait_for(alice.recv(), 5))
    assert got.pop("position")
    assert got == {"from": "bob", "message": "hi alice"}
    # Senders do not get their own messages back (the seed's params filter), and other
    # rooms hear nothing.
    for ws in (alice, lobby):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
    for ws in (alice, bob, lobby):
        await ws.close()
