"""The example chat project, as a new user runs it: real sessions, permissions, workers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support.processes import EXAMPLE_PROJECT, Stack, base_env

pytestmark = pytest.mark.timeout(120)

SETUP = """
from django.contrib.auth import get_user_model
from django.test import Client
import json
keys = {}
for name in ("alice", "bob", "mallory"):
    user = get_user_model().objects.create_user(name, password="pw")
    if name != "mallory":
        from django.contrib.auth.models import Permission
        user.user_permissions.add(Permission.objects.get(codename="connect_to_chat"))
    client = Client()
    assert client.login(username=name, password="pw")
    keys[name] = client.cookies["sessionid"].value
print(json.dumps(keys))
"""


def example_env(tmp_path: Path) -> dict[str, str]:
    return {
        "CHAT_DATABASE": str(tmp_path / "chat.sqlite3"),
        "CHAT_BROKER": f"unix:{tmp_path / 'chat.sock'}",
    }


def prepare(tmp_path: Path) -> dict[str, str]:
    env = base_env(DJANGO_SETTINGS_MODULE="chat_project.settings", **example_env(tmp_path))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=EXAMPLE_PROJECT, env=env, check=True
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SETUP],
        cwd=EXAMPLE_PROJECT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    assert json.loads(await asyncio.wait_for(bob.recv(), 5)) == {
        "from": "alice",
        "message": "hello bob",
    }
    await bob.send("hi alice")
    assert json.loads(await asyncio.wait_for(alice.recv(), 5)) == {
        "from": "bob",
        "message": "hi alice",
    }
    # Senders do not get their own messages back (the seed's params filter), and other
    # rooms hear nothing.
    for ws in (alice, lobby):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
    for ws in (alice, bob, lobby):
        await ws.close()
