"""Channels' documented consumer behaviour, through the in-process communicator."""

from __future__ import annotations

import pytest

from django_ws_client.consumers import AsyncWebsocketConsumer, BaseConsumer
from django_ws_client.exceptions import ChannelFull, DenyConnection, StopConsumer
from django_ws_client.groups import GroupMessage
from django_ws_client.testing import WebsocketCommunicator
from django_ws_client.transport import get_channel_layer


async def test_tutorial_sync_consumer_broadcasts_to_its_room() -> None:
    a = WebsocketCommunicator(
        None, "/ws/chat/sync/lobby/", headers=[(b"origin", b"http://localhost")]
    )
    b = WebsocketCommunicator(None, "/ws/chat/sync/lobby/")
    b.channel_layer = a.channel_layer
    assert await a.connect() == (True, None)
    assert await b.connect() == (True, None)
    await a.send_json_to({"message": "hello"})
    assert await a.receive_json_from() == {"message": "hello"}
    assert await b.receive_json_from() == {"message": "hello"}
    await a.disconnect()
    await b.send_json_to({"message": "alone"})
    assert await b.receive_json_from() == {"message": "alone"}
    assert await a.receive_nothing() is True
    await b.disconnect()
    assert dict(a.channel_layer.groups) == {}


async def test_tutorial_async_consumer() -> None:
    comm = WebsocketCommunicator(None, "/ws/chat/async/room1/")
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol is None
    await comm.send_to(text_data='{"message": "hi"}')
    assert await comm.receive_from() == '{"message": "hi"}'
    await comm.disconnect()


async def test_json_consumer_auto_joins_groups_and_receives_dict_events() -> None:
    comm = WebsocketCommunicator(None, "/ws/chat/json/")
    assert (await comm.connect())[0]
    assert comm.channel_layer.groups["lobby"]
    # A dict event from outside the consumer: "chat.message" dispatches to chat_message.
    await comm.channel_layer.group_send("lobby", {"type": "chat.message", "message": {"k": [1, 2]}})
    assert await comm.receive_json_from() == {"message": {"k": [1, 2]}}
    await comm.send_json_to({"a": 1})
    assert await comm.receive_json_from() == {"message": {"a": 1}}
    await comm.disconnect()
    assert "lobby" not in comm.channel_layer.groups


async def test_subprotocols_headers_binary_and_close_codes() -> None:
    comm = WebsocketCommunicator(None, "/ws/protocol/x/", subprotocols=["chat.v1", "chat.v2"])
    assert await comm.connect() == (True, "chat.v2")
    await comm.send_to(bytes_data=b"abc")
    assert await comm.receive_from() == b"cba"
    await comm.send_json_to({"close": 4001, "reason": "done"})
    closed = await comm.receive_output()
    assert closed == {"type": "websocket.close", "code": 4001, "reason": "done"}
    await comm.wait()

    # As in Channels, the communicator reports the consumer's close code (1000 by
    # default); the real server answers such a handshake with HTTP 403.
    rejected = WebsocketCommunicator(None, "/ws/protocol/x/", subprotocols=["reject-me"])
    assert await rejected.connect() == (False, 1000)
    assert await WebsocketCommunicator(None, "/ws/nowhere/").connect() == (False, 404)


async def test_send_with_close_and_stop_consumer() -> None:
    comm = WebsocketCommunicator(None, "/ws/protocol/x/")
    await comm.connect()
    await comm.send_json_to({"send_and_close": True})
    assert await comm.receive_from() == "bye"
    assert (await comm.receive_output())["type"] == "websocket.close"
    await comm.wait()

    comm = WebsocketCommunicator(None, "/ws/protocol/x/")
    await comm.connect()
    await comm.send_json_to({"stop": True})
    assert (await comm.receive_output())["code"] == 1000
    await comm.wait()


async def test_missing_handler_is_a_clear_error_re_raised_in_the_test() -> None:
    # The server logs it and closes with 1011; the communicator, as Channels', raises it.
    comm = WebsocketCommunicator(None, "/ws/protocol/x/")
    await comm.connect()
    await comm.send_json_to({"unknown_event": True})
    with pytest.raises(ValueError, match=r"has no handler for event type 'no\.such\.handler'") as raised:
        await comm.receive_output()
    assert "define a method named 'no_such_handler'" in str(raised.value)


async def test_seed_group_message_and_consumer_as_group_member() -> None:
    class Seed(BaseConsumer):
        async def connect(self):
            await get_channel_layer().group_add("seed", self)  # the seed's form: the consumer

        async def chat_message(self, event: GroupMessage):
            await self.send(f"{event.type}|{event.message}|{event.params}|{event['message']}")

    comm = WebsocketCommunicator(Seed.as_handler(), "/")
    assert (await comm.connect())[0]  # connect() returned without accept: accepted
    await comm.channel_layer.group_send(
        "seed", GroupMessage("chat_message", message="m", params='{"p": 1}')
    )
    assert await comm.receive_from() == 'chat_message|m|{"p": 1}|m'
    await comm.disconnect()


async def test_deny_and_accept_connection_exceptions() -> None:
    class Denies(AsyncWebsocketConsumer):
        async def connect(self):
            raise DenyConnection()

    assert await WebsocketCommunicator(Denies.as_handler(), "/").connect() == (False, 1000)

    class Stops(AsyncWebsocketConsumer):
        async def connect(self):
            raise StopConsumer()

    assert await WebsocketCommunicator(Stops.as_handler(), "/").connect() == (False, 1000)


async def test_connect_raising_is_re_raised_in_the_test() -> None:
    class Broken(AsyncWebsocketConsumer):
        async def connect(self):
            raise RuntimeError("connect broke")

    with pytest.raises(RuntimeError, match="connect broke"):
        await WebsocketCommunicator(Broken.as_handler(), "/").connect()


async def test_channel_full_on_a_full_channel() -> None:
    comm = WebsocketCommunicator(AsyncWebsocketConsumer.as_handler(), "/")
    layer = comm.channel_layer
    with pytest.raises(ChannelFull):
        for i in range(layer.capacity + 1):
            await layer.send("specific.nobody!here", {"type": "x", "i": i})


async def test_as_handler_rejects_unknown_keywords() -> None:
    with pytest.raises(TypeError, match="unknown keyword 'nope'"):
        AsyncWebsocketConsumer.as_handler(nope=1)


async def test_login_and_logout_through_the_session() -> None:
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model

    await sync_to_async(get_user_model().objects.get_or_create)(username="dave")
    comm = WebsocketCommunicator(None, "/ws/protocol/x/")
    await comm.connect()
    await comm.send_json_to({"login": "dave"})
    logged_in = await comm.receive_json_from()
    assert logged_in["user"] == "dave" and logged_in["session_key"]
    await comm.disconnect()
    # A new connection with that session cookie is the same user.
    cookie = f"sessionid={logged_in['session_key']}".encode()
    again = WebsocketCommunicator(None, "/ws/protocol/x/", headers=[(b"cookie", cookie)])
    await again.connect()
    await again.send_json_to({"scope": True})
    assert (await again.receive_json_from())["user"] == "dave"
    await again.send_json_to({"login": "-"})
    assert (await again.receive_json_from())["user"] == ""
    await again.disconnect()
