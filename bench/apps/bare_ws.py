"""The reference the fan-out efficiency is measured against: the same chat on the bare
``websockets`` library, in one process, with no Django, no consumer and no broker.

A room is a set of connections in this process; a message is handed to
``websockets.broadcast``, which writes one frame to every member without awaiting. It
runs on the default asyncio event loop, as django-ws' workers do, so the difference
between the two is what django-ws adds on top of the same library.

Usage: ``python bench/apps/bare_ws.py HOST PORT [READY_FILE]``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve

CHAT_PATH = re.compile(r"^/ws/chat/([\w-]{1,64})/$")

rooms: dict[str, set[ServerConnection]] = {}


async def handler(websocket: ServerConnection) -> None:
    path = websocket.request.path if websocket.request else ""
    if path == "/ws/echo/":
        async for message in websocket:
            await websocket.send(message)
        return
    match = CHAT_PATH.match(path)
    if match is None:
        await websocket.close(1008, "no such path")
        return
    members = rooms.setdefault(match.group(1), set())
    members.add(websocket)
    try:
        async for message in websocket:
            broadcast(members, message)
    finally:
        members.discard(websocket)
        if not members:
            rooms.pop(match.group(1), None)


def mark_ready(ready_file: str) -> None:
    """Tell the harness this server accepts connections (it waits on the file)."""
    with open(ready_file, "a") as f:
        f.write(f"{os.getpid()}\n")


async def main(host: str, port: int, ready_file: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve(handler, host, port, compression=None, server_header="bare-websockets"):
        if ready_file:
            mark_ready(ready_file)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
