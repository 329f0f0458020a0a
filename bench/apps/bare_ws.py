"""The reference the fan-out efficiency is measured against: the same chat on the bare
``websockets`` library, in one process, with no Django, no consumer and no broker.

A room is a set of connections in this process; a message is handed to
``websockets.broadcast``, which writes one frame to every member without awaiting. It
runs on the event loop django-ws' workers choose (``BENCH_EVENT_LOOP``, as the harness's
``--event-loop``; by default "auto": uvloop when it is installed, else asyncio's), so
the difference between the two is what django-ws adds on top of the same library. Like
django-ws' workers, it raises its soft open file limit to the hard one.

Usage: ``python bench/apps/bare_ws.py HOST PORT [READY_FILE]``.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import sys
from collections.abc import Callable

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
    # backlog: django-ws' and uvicorn's 2048 rather than asyncio's 100, for the storm (S7).
    async with serve(
        handler, host, port, compression=None, server_header="bare-websockets", backlog=2048
    ):
        loop_name = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        print(f"bare websockets (pid {os.getpid()}) runs on the {loop_name} event loop", flush=True)
        if ready_file:
            mark_ready(ready_file)
        await stop.wait()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop of ``BENCH_EVENT_LOOP`` (auto, asyncio or uvloop), as django-ws picks it."""
    choice = os.environ.get("BENCH_EVENT_LOOP", "auto")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    raise_open_file_limit()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
