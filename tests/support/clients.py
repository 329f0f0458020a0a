"""Websocket clients for tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


async def join(url: str, **kwargs: Any) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect to a consumer that greets with its worker's pid and channel name."""
    ws = await connect(url, **kwargs)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return ws, hello


async def on_distinct_workers(
    url: str, count: int = 2, tries: int = 40
) -> list[tuple[ClientConnection, dict[str, Any]]]:
    """Open connections until ``count`` of them are on different worker processes
    (whichever worker accepts first gets a connection), closing the others."""
    found: dict[int, tuple[ClientConnection, dict[str, Any]]] = {}
    for _ in range(tries):
        ws, hello = await join(url)
        if hello["pid"] in found:
            await ws.close()
        else:
            found[hello["pid"]] = (ws, hello)
            if len(found) == count:
                return list(found.values())
    raise AssertionError(f"{tries} connections landed on only {len(found)} worker(s)")
