"""Consumers written as Channels' documentation and test suite write them, ported by
changing imports only (``channels.generic.websocket`` -> ``django_ws_client.consumers``,
``channels.db`` -> ``django_ws_client.db``). ``tests/client/test_channels_style.py``
drives them."""

import asyncio

from django.contrib.auth import get_user_model
from django.urls import path, re_path

from django_ws_client.consumers import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django_ws_client.db import database_sync_to_async

cancelled = []
"""Names of consumers whose task was cancelled (a receive_output timeout does that)."""


class EchoConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        if text_data:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)


class HeadersConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept(headers=[(b"set-cookie", b"flavour=plain"), (b"x-app", b"chat")])


class FailingConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        raise ValueError(f"cannot handle {text_data}")


class FailingDisconnectConsumer(AsyncWebsocketConsumer):
    async def disconnect(self, code):
        raise RuntimeError(f"disconnect failed with {code}")


class SlowConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(text_data)
            raise


class UserConsumer(AsyncJsonWebsocketConsumer):
    """Uses the ORM in connect(), as tutorial-style consumers do."""

    async def connect(self):
        self.username = await self.get_username(self.scope["url_route"]["kwargs"]["pk"])
        await self.accept()
        await self.send_json({"username": self.username})

    @database_sync_to_async
    def get_username(self, pk):
        return get_user_model().objects.get(pk=pk).get_username()


class RoomConsumer(AsyncJsonWebsocketConsumer):
    groups = ["room"]

    async def room_message(self, event):
        await self.send_json({"alias": self.channel_layer_alias, "text": event["text"]})


class OtherRoomConsumer(RoomConsumer):
    channel_layer_alias = "other"


class ElsewhereRoomConsumer(RoomConsumer):
    channel_layer_alias = "elsewhere"


class KwargsConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.send(text_data=self.scope["url_route"]["kwargs"]["message"])


websocket_urlpatterns = [
    path("ws/instance/", EchoConsumer()),
    path("ws/kwargs/<str:message>/", KwargsConsumer.as_asgi()),
    re_path(r"^ws/user/(?P<pk>\d+)/$", UserConsumer.as_asgi()),
    path("ws/room/", RoomConsumer.as_asgi()),
    path("ws/other-room/", OtherRoomConsumer.as_asgi()),
]
