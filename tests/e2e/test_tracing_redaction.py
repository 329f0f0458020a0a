"""Spans carry no secrets by default: a real server with tracing on (console exporter,
so every span lands in its log) records a connection's path with its query values
redacted, and neither the token nor the cookie or authorization header appears."""

from __future__ import annotations

import asyncio
import json

import pytest

from support.clients import join
from support.processes import Stack, wait_until

pytestmark = pytest.mark.timeout(90)

TOKEN = "tok-3f9a1c77e2"
COOKIE = "remember_me=ck-81b2d0c9aa"
BEARER = "Bearer au-5e6f7a8b9c"
TRACING = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50"}


async def traced_connection(stack: Stack, **env: str) -> str:
    server = stack.edge(workers=1, env={**TRACING, **env})
    ws, _ = await join(
        f"{server.ws_url}/ws/group/traced/?token={TOKEN}&room=1",
        additional_headers={"Cookie": COOKIE, "Authorization": BEARER},
    )
    await ws.send(json.dumps({"text": "traced"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["text"] == "traced"
    await ws.close()
    wait_until(lambda: '"name": "django_ws connect"' in server.log(), 10, "the connect span")
    wait_until(lambda: '"name": "django_ws group_send"' in server.log(), 10, "a group_send span")
    return server.log()


async def test_spans_do_not_contain_the_token_or_credentials(stack: Stack) -> None:
    log = await traced_connection(stack)
    paths = [line.strip() for line in log.splitlines() if '"django_ws.path"' in line]
    print(f"\nconnect span attribute: {paths[0]}")
    print(f"token in spans: {TOKEN in log}; cookie: {COOKIE in log}; bearer: {BEARER in log}")
    assert '"/ws/group/traced/?token=[redacted]&room=[redacted]"' in paths[0]
    assert TOKEN not in log
    assert COOKIE.split("=")[1] not in log
    assert BEARER.split()[1] not in log


async def test_recording_query_strings_is_a_setting(stack: Stack) -> None:
    log = await traced_connection(stack, TEST_TRACING_RECORD_SENSITIVE="1")
    paths = [line.strip() for line in log.splitlines() if '"django_ws.path"' in line]
    print(f"\nwith WEBSOCKET_TRACING_RECORD_SENSITIVE = True: {paths[0]}")
    assert TOKEN in paths[0]
