"""The benchmark's consumers. The bodies are those of the Channels project's
``consumers.py``, line for line: only the imports differ."""

from django_ws_client.consumers import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    """Every text frame a member sends goes unchanged to every member of its room."""

    async def connect(self):
        self.room = "chat_" + self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(self.room, {"type": "relay", "text": text_data})

    async def relay(self, event):
        await self.send(text_data=event["text"])

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.room, self.channel_name)


class EchoConsumer(AsyncWebsocketConsumer):
    """Sends every text frame back unchanged."""

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)
