"""Exclude, counts, presence and per-user sends on the in-process layer, the clear
errors for misuse, and their system checks."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.checks import run_checks
from django.test import override_settings
from django.urls import re_path

from django_ws_client.consumers import AsyncWebsocketConsumer
from django_ws_client.exceptions import PresenceInfoTooLarge, PresenceNotEnabled
from django_ws_client.presence import default_info, user_group
from django_ws_client.testing import WebsocketCommunicator
from django_ws_client.transport import InMemoryChannelLayer
from django_ws_client.transport.config import InvalidChannelLayerError, parse_config


def layer() -> InMemoryChannelLayer:
    return InMemoryChannelLayer(address="unix:/nowhere.sock", presence_groups=["lobby_*"])


async def test_exclude_one_or_a_list() -> None:
    memory = layer()
    got: dict[str, list[str]] = {"a!1": [], "a!2": [], "a!3": []}
    for channel, inbox in got.items():
        memory.attach(channel, lambda event, inbox=inbox: inbox.append(event["text"]) or True)
        await memory.group_add("room", channel)
    await memory.group_send("room", {"type": "m", "text": "one"}, exclude="a!1")
    await memory.group_send("room", {"type": "m", "text": "two"}, exclude=["a!1", "a!2"])
    assert got == {"a!1": [], "a!2": ["one"], "a!3": ["one", "two"]}
    assert await memory.group_size("room") == 3
    assert await memory.group_channels("room") == ["a!1", "a!2", "a!3"]


async def test_presence_dedupes_users_and_refuses_misuse() -> None:
    memory = layer()
    await memory.group_add("lobby_1", "a!1", info={"id": 7, "name": "Alice"})
    await memory.group_add("lobby_1", "a!2", info={"id": 7, "name": "Alice"})
    await memory.group_add("lobby_1", "a!3")
    present = {p.user: p.connections for p in await memory.group_presence("lobby_1")}
    assert present == {"7": 2, "a!3": 1}
    with pytest.raises(PresenceNotEnabled, match="'presence_groups'"):
        await memory.group_presence("room")
    with pytest.raises(PresenceInfoTooLarge, match="presence_info_bytes"):
        await memory.group_add("lobby_1", "a!4", info={"id": 8, "bio": "x" * 2000})
    assert await memory.group_size("lobby_1") == 3


async def test_presence_events_one_join_per_user_and_a_leave_after_grace() -> None:
    """As the broker sends them: a user's first connection joins (its own included),
    a second one makes no event, the last one leaving is a leave after the grace period,
    and coming back within it makes no event at all."""
    memory = InMemoryChannelLayer(presence_groups=["lobby_*"], presence_grace_seconds=0.2)
    seen: dict[str, list[tuple[str, str]]] = {"b!1": [], "a!1": [], "a!2": []}
    for channel, inbox in seen.items():
        memory.attach(
            channel,
            lambda event, inbox=inbox: inbox.append((event["type"], event["user"])) or True,
        )
    await memory.group_add("lobby_1", "b!1", info={"id": 2, "name": "Bob"})
    await memory.group_add("lobby_1", "a!1", info={"id": 7, "name": "Alice"})
    await memory.group_add("lobby_1", "a!2", info={"id": 7, "name": "Alice"})
    await memory.group_add("room", "a!1", info={"id": 7, "name": "Alice"})  # no presence
    assert seen["b!1"] == [("presence.join", "2"), ("presence.join", "7")]
    assert seen["a!1"] == [("presence.join", "7")]
    assert seen["a!2"] == []
    await memory.group_discard("lobby_1", "a!1")
    memory.detach("a!2")  # a tab closed: its groups go with it
    assert seen["b!1"][2:] == []  # not before the grace period
    present = {p.user: p.connections for p in await memory.group_presence("lobby_1")}
    assert present == {"2": 1, "7": 0}  # listed with no connection until the leave
    await asyncio.sleep(0.3)
    assert seen["b!1"][2:] == [("presence.leave", "7")]
    assert [p.user for p in await memory.group_presence("lobby_1")] == ["2"]
    # Back within the grace period: neither a leave nor a join.
    await memory.group_discard("lobby_1", "b!1")
    await memory.group_add("lobby_1", "b!1", info={"id": 2, "name": "Bob"})
    await asyncio.sleep(0.3)
    assert seen["b!1"][3:] == []
    # Anonymous members are each their own entry, named by channel; flush forgets a
    # leave still waiting.
    memory.attach("anon!1", lambda event: True)
    await memory.group_add("lobby_1", "anon!1")
    assert seen["b!1"][3:] == [("presence.join", "anon!1")]
    await memory.group_discard("lobby_1", "anon!1")
    await memory.flush()
    await asyncio.sleep(0.3)
    assert seen["b!1"][4:] == []


class LobbyConsumer(AsyncWebsocketConsumer):
    presence_groups = ["lobby"]

    def presence_info(self) -> dict[str, Any] | None:
        return {"id": self.scope["path"].strip("/").rsplit("/", 1)[-1]}

    async def presence_join(self, event: dict[str, Any]) -> None:
        await self.send(json.dumps(["join", event["user"], event["info"]]))

    async def presence_leave(self, event: dict[str, Any]) -> None:
        await self.send(json.dumps(["leave", event["user"]]))


async def test_presence_handlers_run_under_the_communicator() -> None:
    """A consumer's presence_join and presence_leave handlers, tested the way Channels
    tests consumers: two communicators on the project's in-memory layer."""
    backends = {
        "default": {
            "BACKEND": "django_ws_client.transport.InMemoryChannelLayer",
            "CONFIG": {"presence_groups": ["lobby"], "presence_grace_seconds": 0},
        }
    }
    with override_settings(WEBSOCKET_TRANSPORT_BACKENDS=backends):
        bob = WebsocketCommunicator(LobbyConsumer.as_asgi(), "/ws/lobby/bob/")
        assert (await bob.connect())[0]
        assert json.loads(await bob.receive_from()) == ["join", "bob", {"id": "bob"}]
        alice = WebsocketCommunicator(LobbyConsumer.as_asgi(), "/ws/lobby/alice/")
        assert (await alice.connect())[0]
        assert json.loads(await alice.receive_from()) == ["join", "alice", {"id": "alice"}]
        assert json.loads(await bob.receive_from()) == ["join", "alice", {"id": "alice"}]
        await alice.disconnect()
        assert json.loads(await bob.receive_from()) == ["leave", "alice"]
        assert await bob.receive_nothing()
        await bob.disconnect()


def test_a_leave_outlives_the_event_loop_it_waited_in() -> None:
    """The in-memory layer outlives a test's event loop: a leave still waiting when the
    loop closed is sent once it is due, so the user's next join is a join again."""
    memory = InMemoryChannelLayer(presence_groups=["lobby"], presence_grace_seconds=0.1)
    seen: list[tuple[str, str]] = []
    memory.attach("b!1", lambda event: seen.append((event["type"], event["user"])) or True)

    async def first_test() -> None:
        await memory.group_add("lobby", "b!1", info={"id": "bob"})
        await memory.group_add("lobby", "a!1", info={"id": "alice"})
        await memory.group_discard("lobby", "a!1")

    async def second_test() -> None:
        await asyncio.sleep(0.2)
        await memory.group_add("lobby", "a!2", info={"id": "alice"})

    asyncio.run(first_test())  # closes its loop with alice's leave still waiting
    asyncio.run(second_test())
    assert seen == [
        ("presence.join", "bob"),
        ("presence.join", "alice"),
        ("presence.leave", "alice"),
        ("presence.join", "alice"),
    ]


def test_default_info_and_user_group() -> None:
    user = User(pk=42, username="alice", first_name="Alice", last_name="Liddell")
    assert default_info({"user": user}) == {"id": 42, "name": "Alice Liddell"}
    assert default_info({"user": AnonymousUser()}) is None
    assert user_group(user) == user_group(42) == "user.42"
    assert user_group("alice@example.com").startswith("user.h")
    with pytest.raises(ValueError, match="not an authenticated user"):
        user_group(AnonymousUser())


def test_config_errors_name_the_setting() -> None:
    with pytest.raises(InvalidChannelLayerError, match="presence_groups"):
        parse_config({"address": "unix:/x.sock", "presence_groups": "lobby_*"})
    with pytest.raises(InvalidChannelLayerError, match="presence_info_bytes"):
        parse_config({"address": "unix:/x.sock", "presence_info_bytes": 10**6})


class NotOptedIn(AsyncWebsocketConsumer):
    presence_groups = ["lobby"]


def test_checks_presence_groups_not_opted_in_and_small_info_bound() -> None:
    routes = types.ModuleType("presence_check_routes")
    routes.urlpatterns = [re_path(r"^ws/x/$", NotOptedIn.as_handler())]  # type: ignore[attr-defined]
    sys.modules["presence_check_routes"] = routes
    backends = {
        "default": {
            "BACKEND": "django_ws_client.transport.GRPCTransportLayer",
            "CONFIG": {"address": "unix:/x.sock", "presence_groups": ["chat_*"]},
        }
    }
    try:
        with override_settings(
            WEBSOCKET_ROUTE_MODULE="presence_check_routes",
            WEBSOCKET_TRANSPORT_BACKENDS=backends,
            WEBSOCKET_USER_GROUPS="yes",
        ):
            found = {m.id: m.msg for m in run_checks(tags=["django_ws"])}
        assert "'lobby', which did not opt in to presence" in found["django_ws.E020"]
        assert "WEBSOCKET_USER_GROUPS" in found["django_ws.E021"]
        backends["default"]["CONFIG"]["presence_info_bytes"] = 64  # type: ignore[index]
        with override_settings(WEBSOCKET_TRANSPORT_BACKENDS=backends):
            found = {m.id: m.msg for m in run_checks(tags=["django_ws"])}
        assert "presence_info_bytes" in found["django_ws.W020"]
    finally:
        del sys.modules["presence_check_routes"]
