"""The seed's chat consumer, with the seed's bugs fixed, and a per-room variant.

Fixed from the seed: ``===`` (not Python), ``session_started`` set on ``self`` (it was
a local), the ``user_name`` / ``sender`` key mismatch, and the routing name mismatch.

Rooms opted in to presence (``presence_groups`` in settings): the page shows who is
online and keeps it up to date from ``presence.join`` / ``presence.leave`` events. A
sender no longer gets its own messages: ``group_send(..., exclude=self.channel_name)``
(the seed filtered them out by hand).
"""

import json
from urllib.parse import parse_qs

from django_ws_client.consumers import BaseConsumer
from django_ws_client.groups import GroupMessage
from django_ws_client.middlewares.utils import database_sync_to_async
from django_ws_client.transport import get_channel_layer


class ChatConsumer(BaseConsumer):
    session_started = False

    def room_group(self):
        return "chat_room_a"

    async def connect(self):
        # Channels-like scope system
        self.user = self.scope["user"]

        if not await database_sync_to_async(self.user.has_perm)("chat.connect_to_chat"):
            return await self.reject()

        self.room_group_name = self.room_group()
        self.user_name = self.user.get_full_name() or self.user.get_username()

        # A reconnecting page hands back the position of the last message it got:
        # what it missed is dispatched first, or a group.gap event if it cannot be.
        since = parse_qs(self.scope["query_string"].decode()).get("since", [None])[0]
        await get_channel_layer().group_add(self.room_group_name, self, since=since)

        self.session_started = True
        await self.accept()
        # Who is online, once what was missed (since=) has been dispatched: this event
        # queues behind it, so the page's list is not overwritten by old joins/leaves.
        await self.channel_layer.send(self.channel_name, {"type": "presence.snapshot"})

    async def reject(self):
        # Do any cleaning here
        await self.close()

    async def chat_message(self, event: GroupMessage):
        # The sender was excluded by group_send: no filtering by name here.
        params = json.loads(event.params)
        await self.send(
            json.dumps(
                {
                    "from": params["sender"],
                    "message": event.message,
                    "position": self.group_position(self.room_group_name),
                }
            )
        )

    async def presence_snapshot(self, event):
        present = await get_channel_layer().group_presence(self.room_group_name)
        await self.send(
            json.dumps({"online": [dict(p.info, connections=p.connections) for p in present]})
        )

    async def presence_join(self, event):
        await self.send(json.dumps({"presence": "join", "user": event["info"]}))

    async def presence_leave(self, event):
        await self.send(json.dumps({"presence": "leave", "user": event["info"]}))

    async def group_gap(self, event):
        # Messages were missed and cannot be replayed: tell the page, which says so.
        await self.send(
            json.dumps(
                {"gap": event["reason"], "position": self.group_position(self.room_group_name)}
            )
        )

    async def receive(self, text_data=None, bytes_data=None):
        # User was verified?
        if self.session_started:
            await get_channel_layer().group_send(
                self.room_group_name,
                GroupMessage(
                    "chat_message",
                    message=text_data,
                    params=json.dumps({"sender": self.user_name}),
                ),
                exclude=self.channel_name,
            )


class RoomConsumer(ChatConsumer):
    """The same chat with one group per room named in the URL (``/ws/chat/<room>/``)."""

    def room_group(self):
        return f"chat_{self.scope['url_route']['kwargs']['room']}"
