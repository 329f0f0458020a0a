"""The consumers of the Channels chat tutorial, ported by changing imports only.

Channels: ``from channels.generic.websocket import WebsocketConsumer`` and
``from channels.layers import get_channel_layer``; the rest is the tutorial's code.
"""

import json

from asgiref.sync import async_to_sync

from django_ws_client.consumers import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    WebsocketConsumer,
)


class ChatConsumer(WebsocketConsumer):
    def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"

        # Join room group
        async_to_sync(self.channel_layer.group_add)(self.room_group_name, self.channel_name)

        self.accept()

    def disconnect(self, close_code):
        # Leave room group
        async_to_sync(self.channel_layer.group_discard)(self.room_group_name, self.channel_name)

    # Receive message from WebSocket
    def receive(self, text_data):
        text_data_json = json.loads(text_data)
        message = text_data_json["message"]

        # Send message to room group
        async_to_sync(self.channel_layer.group_send)(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    # Receive message from room group
    def chat_message(self, event):
        message = event["message"]

        # Send message to WebSocket
        self.send(text_data=json.dumps({"message": message}))


class AsyncChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"

        # Join room group
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)

        await self.accept()

    async def disconnect(self, close_code):
        # Leave room group
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    # Receive message from WebSocket
    async def receive(self, text_data):
        text_data_json = json.loads(text_data)
        message = text_data_json["message"]

        # Send message to room group
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    # Receive message from room group
    async def chat_message(self, event):
        message = event["message"]

        # Send message to WebSocket
        await self.send(text_data=json.dumps({"message": message}))


class JsonChatConsumer(AsyncJsonWebsocketConsumer):
    """The JSON flavour, with the room joined through ``groups``."""

    groups = ["lobby"]

    async def receive_json(self, content):
        await self.channel_layer.group_send("lobby", {"type": "chat.message", "message": content})

    async def chat_message(self, event):
        await self.send_json({"message": event["message"]})


class ProtocolConsumer(AsyncWebsocketConsumer):
    """Subprotocols, close codes and reasons, headers, scope contents."""

    async def connect(self):
        offered = self.scope["subprotocols"]
        if "reject-me" in offered:
            await self.close()
            return
        chosen = "chat.v2" if "chat.v2" in offered else None
        await self.accept(subprotocol=chosen, headers=[(b"x-django-ws", b"yes")])

    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None:
            await self.send(bytes_data=bytes_data[::-1])
            return
        command = json.loads(text_data)
        if command.get("close"):
            await self.close(code=command["close"], reason=command.get("reason"))
        elif command.get("send_and_close"):
            await self.send(text_data="bye", close=True)
        elif command.get("scope"):
            scope = self.scope
            user = scope.get("user")
            await self.send(
                text_data=json.dumps(
                    {
                        "type": scope["type"],
                        "path": scope["path"],
                        "raw_path": scope["raw_path"].decode(),
                        "query_string": scope["query_string"].decode(),
                        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
                        "client": scope["client"],
                        "server": scope["server"],
                        "subprotocols": scope["subprotocols"],
                        "url_route": scope["url_route"],
                        "cookies": scope.get("cookies"),
                        "session_key": scope["session"].session_key if "session" in scope else None,
                        "user": user.get_username() if user is not None else None,
                        "authenticated": bool(user and user.is_authenticated),
                    }
                )
            )
        elif command.get("stop"):
            from django_ws_client.exceptions import StopConsumer

            raise StopConsumer()
        elif command.get("new_channel"):
            channel = await self.channel_layer.new_channel()
            await self.channel_layer.group_add(command["new_channel"], channel)
            await self.send(text_data=json.dumps({"channel": channel}))
        elif command.get("receive"):
            event = await self.channel_layer.receive(command["receive"])
            await self.send(text_data=json.dumps({"received": event}))
        elif command.get("login"):
            from django.contrib.auth import get_user_model

            from django_ws_client.auth import login, logout

            if command["login"] == "-":
                await logout(self.scope)
            else:
                user = await get_user_model().objects.aget(username=command["login"])
                await login(self.scope, user)
            await self.scope["session"].asave()
            await self.send(
                text_data=json.dumps(
                    {
                        "user": self.scope["user"].get_username(),
                        "session_key": self.scope["session"].session_key,
                    }
                )
            )
        elif command.get("unknown_event"):
            await self.channel_layer.send(self.channel_name, {"type": "no.such.handler"})
