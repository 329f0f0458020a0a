"""Consumer tests written the way Channels' documentation writes them, ported by
changing imports only (``channels.testing`` -> ``django_ws_client.testing``,
``channels.layers`` -> ``django_ws_client.transport``, ``channels.routing`` ->
``django_ws_client.routing``). The project's Channels test settings are carried over as
they were: ``CHANNEL_LAYERS`` with two in-memory aliases (the fixture below stands for
them, since the suite's own project configures the gRPC transport)."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import TestCase, override_settings

from django_ws_client.routing import URLRouter
from django_ws_client.testing import WebsocketCommunicator
from django_ws_client.transport import get_channel_layer

from testproject import channels_style
from testproject.channels_style import (
    EchoConsumer,
    FailingConsumer,
    FailingDisconnectConsumer,
    HeadersConsumer,
    SlowConsumer,
    websocket_urlpatterns,
)

CHANNEL_LAYERS = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    "other": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
}


@pytest.fixture(autouse=True)
def channels_test_settings():
    """The Channels project's test settings: CHANNEL_LAYERS, no django-ws setting."""
    with override_settings(CHANNEL_LAYERS=CHANNEL_LAYERS):
        del settings.WEBSOCKET_TRANSPORT_BACKENDS
        yield


async def test_my_consumer():
    communicator = WebsocketCommunicator(EchoConsumer.as_asgi(), "/testws/")
    connected, subprotocol = await communicator.connect()  # noqa: RUF059 (the docs' line)
    assert connected
    # Test sending text
    await communicator.send_to(text_data="hello")
    response = await communicator.receive_from()
    assert response == "hello"
    # Close
    await communicator.disconnect()


async def test_consumer_instance_as_application():
    communicator = WebsocketCommunicator(EchoConsumer(), "/testws/")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert await communicator.receive_from() == b"\x00\x01"
    await communicator.disconnect()


async def test_consumer_instance_in_url_patterns():
    application = URLRouter(websocket_urlpatterns)
    for word in ("first", "second"):  # one instance serves both connections in turn
        communicator = WebsocketCommunicator(application, "/ws/instance/")
        connected, _ = await communicator.connect()
        assert connected
        await communicator.send_to(text_data=word)
        assert await communicator.receive_from() == word
        await communicator.disconnect()


async def test_url_route_kwargs():
    application = URLRouter(websocket_urlpatterns)
    communicator = WebsocketCommunicator(application, "/ws/kwargs/hello/")
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_from() == "hello"
    await communicator.disconnect()
    with pytest.raises(ValueError, match="No route found for path '/ws/nowhere/'"):
        await WebsocketCommunicator(application, "/ws/nowhere/").connect()


async def test_response_headers():
    communicator = WebsocketCommunicator(HeadersConsumer.as_asgi(), "/testws/")
    connected, _ = await communicator.connect()
    assert connected
    assert communicator.response_headers == [(b"set-cookie", b"flavour=plain"), (b"x-app", b"chat")]
    await communicator.disconnect()


async def test_exception_in_receive_is_raised_by_receive_output():
    communicator = WebsocketCommunicator(FailingConsumer.as_asgi(), "/testws/")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(text_data="bad input")
    with pytest.raises(ValueError, match="cannot handle bad input"):
        await communicator.receive_from()
    # The application has ended; it stays failed for every later call.
    with pytest.raises(ValueError, match="cannot handle bad input"):
        await communicator.send_to(text_data="again")


async def test_exception_in_disconnect_is_raised_by_wait():
    communicator = WebsocketCommunicator(FailingDisconnectConsumer.as_asgi(), "/testws/")
    connected, _ = await communicator.connect()
    assert connected
    with pytest.raises(RuntimeError, match="disconnect failed with 4000"):
        await communicator.disconnect(code=4000)


async def test_receive_output_timeout_cancels_the_application():
    communicator = WebsocketCommunicator(SlowConsumer.as_asgi(), "/testws/")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(text_data="never answered")
    with pytest.raises(asyncio.TimeoutError):
        await communicator.receive_output(timeout=0.2)
    assert channels_style.cancelled == ["never answered"]
    assert communicator.future.cancelled()
    print("receive_output(timeout=0.2) cancelled the application")


async def test_assertion_messages_match_channels():
    communicator = WebsocketCommunicator(EchoConsumer.as_asgi(), "/testws/")
    await communicator.connect()
    with pytest.raises(
        AssertionError, match="You must supply exactly one of text_data or bytes_data"
    ):
        await communicator.send_to(text_data="a", bytes_data=b"b")
    await communicator.send_to(bytes_data=b"binary")
    with pytest.raises(
        AssertionError, match="JSON data is not a text frame, it is <class 'bytes'>"
    ):
        await communicator.receive_json_from()
    await communicator.disconnect()

    closing = WebsocketCommunicator(channels_style.KwargsConsumer.as_asgi(), "/testws/")
    closing.scope["url_route"] = {"args": (), "kwargs": {"message": "hi"}}
    await closing.connect()
    assert await closing.receive_from() == "hi"
    await closing.send_input({"type": "websocket.disconnect", "code": 1000})
    await closing.wait()
    assert await closing.receive_nothing() is True


async def test_in_memory_layer_as_channels_exposes_it():
    channel_layer = get_channel_layer()
    channel_name = await channel_layer.new_channel()
    await channel_layer.send(channel_name, {"type": "test.message", "text": "hi"})
    assert (await channel_layer.receive(channel_name))["text"] == "hi"

    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/room/")
    connected, _ = await communicator.connect()
    assert connected
    assert list(channel_layer.groups) == ["room"]
    assert len(channel_layer.groups["room"]) == 1
    await channel_layer.group_send("room", {"type": "room.message", "text": "from the test"})
    assert await communicator.receive_json_from() == {"alias": "default", "text": "from the test"}
    await communicator.disconnect()
    assert "room" not in channel_layer.groups
    await channel_layer.flush()
    assert channel_layer.channels == {} and channel_layer.groups == {}


async def test_channel_layer_alias():
    application = URLRouter(websocket_urlpatterns)
    default = WebsocketCommunicator(application, "/ws/room/")
    other = WebsocketCommunicator(application, "/ws/other-room/")
    assert (await default.connect())[0] and (await other.connect())[0]

    await get_channel_layer("other").group_send("room", {"type": "room.message", "text": "o"})
    assert await other.receive_json_from() == {"alias": "other", "text": "o"}
    assert await default.receive_nothing() is True

    await get_channel_layer().group_send("room", {"type": "room.message", "text": "d"})
    assert await default.receive_json_from() == {"alias": "default", "text": "d"}
    assert await other.receive_nothing() is True
    await default.disconnect()
    await other.disconnect()


class UserConsumerTests(TestCase):
    """The ORM in connect() inside a TestCase: the test's transaction stays usable."""

    def setUp(self):
        self.user = get_user_model().objects.create(username="ada")

    async def test_connect_reads_the_user_and_the_connection_stays_open(self):
        application = URLRouter(websocket_urlpatterns)
        communicator = WebsocketCommunicator(application, f"/ws/user/{self.user.pk}/")
        connected, _ = await communicator.connect()
        self.assertTrue(connected)
        self.assertEqual(await communicator.receive_json_from(), {"username": "ada"})
        await communicator.disconnect()
        # The test's own connection, inside its transaction, still answers.
        self.assertEqual(await get_user_model().objects.filter(username="ada").acount(), 1)


async def test_raw_asgi_messages():
    communicator = WebsocketCommunicator(HeadersConsumer.as_asgi(), "/testws/")
    await communicator.send_input({"type": "websocket.connect"})
    accepted = await communicator.receive_output()
    assert accepted["type"] == "websocket.accept" and accepted["subprotocol"] is None
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait()
    assert communicator.future.done() and communicator.future.exception() is None
