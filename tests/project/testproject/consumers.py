"""Consumers the end-to-end tests drive. Each reports what the tests need to observe:
its worker's pid, its channel name, and (in a file) every disconnect it ran."""

import asyncio
import base64
import contextvars
import json
import os
import sys
import time
from urllib.parse import parse_qs

from django_ws_client.consumers import AsyncWebsocketConsumer, BaseConsumer
from django_ws_client.exceptions import BrokerUnavailable, LifecycleEventRefused, StopConsumer


def record(line: str) -> None:
    path = os.environ.get("TEST_EVENTS_FILE")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


class GroupRelayConsumer(AsyncWebsocketConsumer):
    """Joins the group in the URL and relays every message to it."""

    async def connect(self):
        # "a+b+c" joins several groups; plain messages go to the first.
        groups = self.scope["url_route"]["kwargs"]["group"].split("+")
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.group = groups[0]
        await self.accept()
        await self.send(json.dumps({"pid": os.getpid(), "channel": self.channel_name}))

    async def receive(self, text_data=None, bytes_data=None):
        message = json.loads(text_data)
        target = message.get("group", self.group)
        event = {
            # The client may choose the event type, as some apps let it pick an action:
            # the security tests use it to try forging the server's own events.
            "type": message.get("type", "relay"),
            "text": message["text"],
            "from": self.channel_name,
            "group": target,
        }
        try:
            if "send_to" in message:
                await self.channel_layer.send(message["send_to"], event)
            else:
                await self.channel_layer.group_send(target, event)
        except BrokerUnavailable as exc:
            # The documented fail-fast error: tell the client instead of closing.
            await self.send(json.dumps({"error": "broker unavailable", "detail": str(exc)}))
        except LifecycleEventRefused as exc:
            await self.send(json.dumps({"error": "refused", "detail": str(exc)}))

    async def relay(self, event):
        await self.send(
            json.dumps(
                {
                    "text": event["text"],
                    "from": event["from"],
                    "pid": os.getpid(),
                    "group": event.get("group"),
                }
            )
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
        if bytes_data is not None:
            await self.send(bytes_data=bytes_data)
            return
        await self.send(text_data=json.dumps({"echo": text_data, "pid": os.getpid()}))


class FaultyConsumer(AsyncWebsocketConsumer):
    """Misbehaves where the URL says: in a group handler, in disconnect, by blocking the
    event loop, by handling messages slowly, or by never deciding the handshake."""

    async def connect(self):
        self.where = self.scope["url_route"]["kwargs"]["where"]
        if self.where == "never_accept":
            try:
                await asyncio.Event().wait()
            finally:
                record("connect cancelled")
        await self.channel_layer.group_add("faulty", self.channel_name)
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        if self.where == "handler":
            await self.channel_layer.group_send("faulty", {"type": "boom"})
        elif self.where == "stall":
            # The first message says how long to stall; the others are counted, and
            # "count?" asks for the count.
            if text_data == "count?":
                await self.send(text_data=str(self.count))
            elif hasattr(self, "count"):
                self.count += 1
            else:
                self.count = 0
                await asyncio.sleep(float(text_data))
        elif self.where == "slow":
            await asyncio.sleep(0.002)  # slower than a client that sends in a burst
            await self.send(text_data=text_data)
        elif self.where == "block":
            time.sleep(float(text_data))  # noqa: ASYNC251 (blocks the loop on purpose)
            await self.send(text_data="unblocked")
        else:
            await self.send(text_data=text_data)

    async def boom(self, event):
        raise RuntimeError("boom from a group handler")

    async def disconnect(self, code):
        record(f"disconnect faulty {self.where} {code}")
        if self.where == "disconnect":
            raise RuntimeError("boom from disconnect")


class VerbatimRelayConsumer(AsyncWebsocketConsumer):
    """Relays each message to its room as it came, and sends each group message on as
    it came: every member's send gets the same text object, as in a chat that forwards
    text without re-encoding it. (Binary messages travel base64-encoded: events are
    JSON.)"""

    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()
        await self.send("joined")

    async def receive(self, text_data=None, bytes_data=None):
        binary = None if bytes_data is None else base64.b64encode(bytes_data).decode()
        await self.channel_layer.group_send(
            self.room, {"type": "relayed", "text": text_data, "binary": binary}
        )

    async def relayed(self, event):
        if event["binary"] is None:
            await self.send(text_data=event["text"])
        else:
            await self.send(bytes_data=base64.b64decode(event["binary"]))


class RoomConsumer(AsyncWebsocketConsumer):
    """A chat room written as Channels' tutorial writes one: group_send errors are not
    caught. Each message goes to the client with its position in the room; a client
    that reconnects with ``?since=<position>`` gets what it missed first."""

    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        since = parse_qs(self.scope["query_string"].decode()).get("since", [None])[0]
        await self.channel_layer.group_add(self.room, self.channel_name, since=since)
        await self.accept()
        await self.send(json.dumps({"pid": os.getpid(), "channel": self.channel_name}))

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(
            self.room, {"type": "room.message", "text": text_data, "from": self.channel_name}
        )

    async def room_message(self, event):
        await self.send(
            json.dumps({"text": event["text"], "position": self.group_position(self.room)})
        )

    async def group_gap(self, event):
        await self.send(
            json.dumps({"gap": event["reason"], "position": self.group_position(self.room)})
        )

    async def disconnect(self, code):
        record(f"disconnect {self.channel_name} {code}")


class PresenceConsumer(AsyncWebsocketConsumer):
    """Joins the groups in the URL ("a+b"); a group named ``presence_*`` opted in to
    presence (settings). Commands from the client, one JSON object each:
    ``{"send": text, "group": g, "exclude": "self" | [channels]}``,
    ``{"user_send": pk, "text": t}``, ``{"bulk": [[g, text], ...]}``, ``{"size": g}``, ``{"channels": g}``,
    ``{"presence": g}``. Events go back to the client as JSON."""

    async def connect(self):
        self.joined = self.scope["url_route"]["kwargs"]["groups"].split("+")
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        user = self.scope["user"]
        await self.send(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "channel": self.channel_name,
                    "user": user.pk if user.is_authenticated else None,
                }
            )
        )

    async def receive(self, text_data=None, bytes_data=None):
        command = json.loads(text_data)
        layer = self.channel_layer
        if "send" in command:
            exclude = command.get("exclude")
            if exclude == "self":
                exclude = self.channel_name
            await layer.group_send(
                command.get("group", self.joined[0]),
                {"type": "room.message", "text": command["send"]},
                exclude=exclude,
            )
        elif "user_send" in command:
            await layer.user_send(
                command["user_send"], {"type": "room.message", "text": command["text"]}
            )
        elif "bulk" in command:
            await layer.group_send_many(
                (group, {"type": "room.message", "text": text}) for group, text in command["bulk"]
            )
        elif "size" in command:
            await self.send(json.dumps({"size": await layer.group_size(command["size"])}))
        elif "channels" in command:
            channels = await layer.group_channels(command["channels"])
            await self.send(json.dumps({"channels": sorted(channels)}))
        elif "presence" in command:
            present = await layer.group_presence(command["presence"])
            await self.send(
                json.dumps(
                    {"present": [[p.user, p.info, p.connections] for p in present]},
                )
            )

    async def room_message(self, event):
        await self.send(json.dumps({"text": event["text"]}))

    async def presence_join(self, event):
        await self.send(json.dumps({"event": "join", "user": event["user"], "info": event["info"]}))

    async def presence_leave(self, event):
        await self.send(
            json.dumps({"event": "leave", "user": event["user"], "info": event["info"]})
        )


# A context variable the handler-rules consumer sets in connect(): its handlers must
# see it, whichever task runs them.
_connect_marker: contextvars.ContextVar[str] = contextvars.ContextVar("connect_marker")


def _run_at_once() -> bool:
    """Whether the calling handler runs where its event arrived (the connection's
    ``_handle_now``), not from its consumer's loop."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_qualname == "ConnectionPort._handle_now":
            return True
        frame = frame.f_back
    return False


class HandlerRulesConsumer(AsyncWebsocketConsumer):
    """Reports how each group event's handler ran (tests/e2e/test_eager_handlers.py):
    at once or from the consumer's loop, as the consumer's own task or not, in its
    context, overlapping another or not. A client message is a list of events to send
    to the room; each event may ask its handler to wait, time out, block the loop,
    raise or stop the consumer."""

    async def connect(self):
        self.room = "rules." + self.scope["url_route"]["kwargs"]["room"]
        self.own_task = asyncio.current_task()
        self.running = 0
        _connect_marker.set(f"connect of {self.channel_name}")
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()
        await self.send(json.dumps({"pid": os.getpid(), "channel": self.channel_name}))

    async def receive(self, text_data=None, bytes_data=None):
        for event in json.loads(text_data):
            # "to" names another room of this consumer's kind to send to.
            to = event.pop("to", None)
            group = "rules." + to if to else self.room
            await self.channel_layer.group_send(group, {"type": "rule.event", **event})

    async def rule_event(self, event):
        self.running += 1
        record(f"started {event['n']} {self.channel_name}")
        try:
            report = {
                "n": event["n"],
                "at_once": _run_at_once(),
                "own_task": asyncio.current_task() is self.own_task,
                "context": _connect_marker.get(None),
                "overlapped": self.running > 1,
            }
            if "timeout" in event:
                try:
                    async with asyncio.timeout(event["timeout"]):
                        await asyncio.sleep(30)
                    report["timed_out"] = False
                except TimeoutError:
                    report["timed_out"] = True
                # Still its consumer's task after the wait.
                report["own_task_after"] = asyncio.current_task() is self.own_task
            if event.get("wait"):
                await asyncio.sleep(event["wait"])
            if event.get("block"):
                time.sleep(event["block"])  # noqa: ASYNC251 (blocks the loop on purpose)
            if event.get("raise"):
                raise RuntimeError("rule.event asked to raise")
            if event.get("stop"):
                raise StopConsumer
            await self.send(text_data=json.dumps(report))
        finally:
            self.running -= 1
            record(f"finished {event['n']} {self.channel_name}")

    async def disconnect(self, code):
        record(f"disconnect {self.channel_name}")
        await self.channel_layer.group_discard(self.room, self.channel_name)
