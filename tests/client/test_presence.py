"""Exclude, counts, presence and per-user sends on the in-process layer, the clear
errors for misuse, and their system checks."""

from __future__ import annotations

import sys
import types

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.checks import run_checks
from django.test import override_settings
from django.urls import re_path

from django_ws_client.consumers import AsyncWebsocketConsumer
from django_ws_client.exceptions import PresenceInfoTooLarge, PresenceNotEnabled
from django_ws_client.presence import default_info, user_group
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
