"""Channels behaviour on the real server: worker processes, broker, real sockets."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from django_ws_client.transport import get_channel_layer, reset_layers

from support.clients import join, on_distinct_workers
from support.processes import Stack

pytestmark = pytest.mark.timeout(90)

DB = os.environ["TEST_DATABASE"]


def live(stack: Stack, tmp_path: Path, **env: str):
    broker = f"unix:{tmp_path / 'broker.sock'}"
    return stack.edge(workers=2, broker=broker, env={"TEST_DATABASE": DB, **env}), broker


def session_cookie(username: str) -> str:
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password("pw")
    user.save()
    client = Client()
    assert client.login(username=username, password="pw")
    return client.cookies["sessionid"].value


async def test_session_user_and_scope_for_a_logged_in_client(stack: Stack, tmp_path: Path) -> None:
    from asgiref.sync import sync_to_async

    cookie = await sync_to_async(session_cookie)("carol")
    server, _ = live(stack, tmp_path)
    url = f"{server.ws_url}/ws/protocol/x/?a=1&b=two"
    async with connect(
        url,
        additional_headers={"Cookie": f"sessionid={cookie}; theme=dark"},
        subprotocols=["chat.v2"],
    ) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"scope": True}))
        scope = json.loads(await ws.recv())
    assert scope["user"] == "carol" and scope["authenticated"] is True
    assert scope["session_key"] == cookie
    assert scope["cookies"] == {"sessionid": cookie, "theme": "dark"}
    assert scope["type"] == "websocket" and scope["path"] == "/ws/protocol/x/"
    assert scope["raw_path"] == "/ws/protocol/x/" and scope["query_string"] == "a=1&b=two"
    assert scope["headers"]["sec-websocket-protocol"] == "chat.v2"
    assert scope["client"][0] == "127.0.0.1" and scope["server"][1] == int(
        server.bind.split(":")[1]
    )
    assert scope["subprotocols"] == ["chat.v2"]
    assert scope["url_route"] == {"args": [], "kwargs": {"flavour": "x"}}
    async with connect(url) as anonymous:
        await anonymous.send(json.dumps({"scope": True}))
        scope = json.loads(await anonymous.recv())
    assert scope["authenticated"] is False and scope["user"] == ""


async def test_origin_is_checked_with_403(stack: Stack, tmp_path: Path) -> None:
    server, _ = live(stack, tmp_path, TEST_ALLOWED_ORIGINS="https://good.example,.trusted.example")
    for origin in ("https://evil.example", "https://good.example.evil.example", None):
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{server.ws_url}/ws/echo/", origin=origin)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
    for origin in ("https://good.example", "https://chat.trusted.example"):
        async with connect(f"{server.ws_url}/ws/echo/", origin=origin) as ws:  # type: ignore[arg-type]
            await ws.send("x")
            assert json.loads(await ws.recv())["echo"] == "x"


async def test_subprotocols_headers_close_codes_and_reasons(stack: Stack, tmp_path: Path) -> None:
    server, _ = live(stack, tmp_path)
    url = f"{server.ws_url}/ws/protocol/x/"
    async with connect(url, subprotocols=["chat.v1", "chat.v2"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v2"
        assert ws.response is not None and ws.response.headers["x-django-ws"] == "yes"
        await ws.send(json.dumps({"close": 4321, "reason": "custom reason"}))
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 4321 and ws.close_reason == "custom reason"
    async with connect(url, subprotocols=["other"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol is None
    with pytest.raises(InvalidStatus) as rejected:
        await connect(url, subprotocols=["reject-me"])  # type: ignore[list-item]
    assert rejected.value.response.status_code == 403
    async with connect(url) as ws:
        await ws.send(json.dumps({"send_and_close": True}))
        assert await ws.recv() == "bye"
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1000


async def test_send_to_a_channel_on_another_worker(stack: Stack, tmp_path: Path) -> None:
    server, _ = live(stack, tmp_path)
    (a, hello_a), (b, hello_b) = await on_distinct_workers(f"{server.ws_url}/ws/group/dm/")
    await a.send(json.dumps({"send_to": hello_b["channel"], "text": "direct"}))
    message = json.loads(await asyncio.wait_for(b.recv(), 5))
    assert (message["text"], message["from"], message["pid"]) == (
        "direct",
        hello_a["channel"],
        hello_b["pid"],
    )
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(a.recv(), 0.3)
    await a.close()
    await b.close()


async def test_tutorial_sync_consumer_across_two_workers(stack: Stack, tmp_path: Path) -> None:
    server, _ = live(stack, tmp_path)
    clients = [await connect(f"{server.ws_url}/ws/chat/sync/tutorial/") for _ in range(6)]
    await clients[0].send(json.dumps({"message": "hello room"}))
    for ws in clients:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"message": "hello room"}
    for ws in clients:
        await ws.close()


def test_sync_view_publishes_to_clients_on_two_workers(stack: Stack, tmp_path: Path) -> None:
    server, broker = live(stack, tmp_path)
    backends = {
        "default": {
            "BACKEND": "django_ws_client.transport.GRPCTransportLayer",
            "CONFIG": {"address": broker},
        }
    }

    async def scenario() -> list[dict]:
        (a, _), (b, _) = await on_distinct_workers(f"{server.ws_url}/ws/group/news/")

        def post() -> int:
            return Client().post("/publish/news/", {"text": "from a view"}).status_code

        from asgiref.sync import sync_to_async

        assert await sync_to_async(post)() == 200
        got = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for ws in (a, b)]
        await a.close()
        await b.close()
        return got

    with override_settings(WEBSOCKET_TRANSPORT_BACKENDS=backends):
        reset_layers()
        try:
            got = asyncio.run(scenario())
        finally:
            reset_layers()
    assert [m["text"] for m in got] == ["from a view", "from a view"]
    assert len({m["pid"] for m in got}) == 2


def _publish_in_child(queue: multiprocessing.Queue) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(
            "forked", {"type": "relay", "text": "child", "from": "c"}
        )
        queue.put("ok")
    except Exception as exc:  # reported to the parent, which fails the test
        queue.put(repr(exc))


def test_publishing_reuses_one_connection_and_survives_fork(stack: Stack, tmp_path: Path) -> None:
    server, broker = live(stack, tmp_path)
    backends = {
        "default": {
            "BACKEND": "django_ws_client.transport.GRPCTransportLayer",
            "CONFIG": {"address": broker},
        }
    }

    async def listen(count: int) -> list[str]:
        async with connect(f"{server.ws_url}/ws/group/forked/") as ws:
            await ws.recv()
            ready.set()
            return [json.loads(await asyncio.wait_for(ws.recv(), 10))["text"] for _ in range(count)]

    import threading

    ready = threading.Event()
    result: list[list[str]] = []
    listener = threading.Thread(target=lambda: result.append(asyncio.run(listen(4))))
    with override_settings(WEBSOCKET_TRANSPORT_BACKENDS=backends):
        reset_layers()
        try:
            listener.start()
            assert ready.wait(10)
            layer = get_channel_layer()
            async_to_sync(layer.group_send)(
                "forked", {"type": "relay", "text": "parent 1", "from": "p"}
            )
            # From another thread, same layer, same channel.
            thread = threading.Thread(
                target=async_to_sync(layer.group_send),
                args=("forked", {"type": "relay", "text": "thread", "from": "t"}),
            )
            thread.start()
            thread.join()
            assert len(layer._pool._channels) == 1  # one connection, reused
            queue: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
            child = multiprocessing.get_context("fork").Process(
                target=_publish_in_child, args=(queue,)
            )
            child.start()
            assert queue.get(timeout=20) == "ok"
            child.join(10)
            async_to_sync(layer.group_send)(
                "forked", {"type": "relay", "text": "parent 2", "from": "p"}
            )
            listener.join(20)
        finally:
            reset_layers()
    assert sorted(result[0]) == sorted(["parent 1", "thread", "child", "parent 2"])


async def test_new_channel_and_receive_inside_the_server(stack: Stack, tmp_path: Path) -> None:
    server, _ = live(stack, tmp_path)
    async with connect(f"{server.ws_url}/ws/protocol/x/") as reader:
        await reader.send(json.dumps({"new_channel": "side"}))
        channel = json.loads(await reader.recv())["channel"]
        sender, _ = await join(f"{server.ws_url}/ws/group/side/")
        await sender.send(json.dumps({"text": "to the side channel"}))
        await reader.send(json.dumps({"receive": channel}))
        received = json.loads(await asyncio.wait_for(reader.recv(), 5))["received"]
        assert received["type"] == "relay" and received["text"] == "to the side channel"
        await sender.close()
