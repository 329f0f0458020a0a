"""channel_layer_alias on the real server: consumers of two aliases that share the
brokers are served by one websockets_server, each alias with its own groups, as
Channels keeps its layers apart; an alias the server cannot serve is refused by name."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from django.test import override_settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from django_ws_client.transport import get_channel_layer, reset_layers

from support.processes import Stack

pytestmark = pytest.mark.timeout(90)


async def test_two_aliases_on_one_server_keep_their_groups_apart(
    stack: Stack, tmp_path: Path
) -> None:
    broker = f"unix:{tmp_path / 'broker.sock'}"
    server = stack.edge(
        workers=1,
        broker=broker,
        env={"TEST_DATABASE": os.environ["TEST_DATABASE"], "TEST_EXTRA_ALIASES": "1"},
    )
    grpc = {"BACKEND": "django_ws_client.transport.GRPCTransportLayer", "CONFIG": {"address": broker}}
    async with (
        connect(f"{server.ws_url}/ws/room/") as default_room,
        connect(f"{server.ws_url}/ws/other-room/") as other_room,
    ):
        with override_settings(WEBSOCKET_TRANSPORT_BACKENDS={"default": grpc, "other": grpc}):
            reset_layers()
            try:
                await get_channel_layer("other").group_send("room", {"type": "room.message", "text": "o"})
                await get_channel_layer().group_send("room", {"type": "room.message", "text": "d"})
            finally:
                reset_layers()
        assert json.loads(await other_room.recv()) == {"alias": "other", "text": "o"}
        assert json.loads(await default_room.recv()) == {"alias": "default", "text": "d"}
        # Each received only its own alias's message: the next one is the probe.
        for ws, alias in ((default_room, "default"), (other_room, "other")):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await ws.recv()
            print(f"alias {alias!r}: one message, from its own layer only")

    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{server.ws_url}/ws/elsewhere-room/")
    assert refused.value.response.status_code == 500
    assert "uses channel_layer_alias 'elsewhere', which this server does not serve" in server.log()
    assert "serving channel layer aliases 'default', 'other'" in server.log()
