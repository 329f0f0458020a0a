"""Consumers the end-to-end tests drive. Each reports what the tests need to observe:
its worker's pid, its channel name, and (in a file) every disconnect it ran."""

import json
import os

from django_ws_client.consumers import AsyncWebsocketConsumer, BaseConsumer


def record(line: str) -> None:
    path = os.environ.get("TEST_EVENTS_FILE")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


class GroupRelayConsumer(AsyncWebsocketConsumer):
    """Joins the group in the URL and relays every message to it."""

    async def connect(self):
        self.group = self.scope["url_route"]["kwargs"]["group"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send(json.dumps({"pid": os.getpid(), "channel": self.channel_name}))

    async def receive(self, text_data=None, bytes_data=None):
        message = json.loads(text_data)
        if "send_to" in message:
            await self.channel_layer.send(
                message["send_to"],
                {"type": "relay", "text": message["text"], "from": self.channel_name},
            )
            return
        await self.channel_layer.group_send(
            self.group, {"type": "relay", "text": message["text"], "from": self.channel_name}
        )

    async def relay(self, event):
        await self.send(
            json.dumps({"text": event["text"], "from": event["from"], "pid": os.getpid()})
        )

    async def disconnect(self, code):
        record(f"disconnect {self.channel_name} {code}")


class RaisingConsumer(BaseConsumer):
    async def connect(self):
        if self.scope["url_route"]["kwargs"]["where"] == "connect":
            raise RuntimeError("boom from connect")
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        raise RuntimeError(f"boom from receive: {text_data}")

    async def disconnect(self, code):
        record(f"disconnect raising {code}")


class RejectingConsumer(BaseConsumer):
    async def connect(self):
        await self.close()


class EchoConsumer(BaseConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=json.dumps({"echo": text_data, "pid": os.getpid()}))
