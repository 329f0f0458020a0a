"""The listening socket keeps the backlog django-ws sets (2048), not asyncio's 100.

``loop.create_server(sock=...)`` calls ``listen()`` again with its own ``backlog``
argument, 100 unless given. With 100, a connect storm overflows the kernel's accept
queue while the workers are busy: further SYNs are dropped, clients retry them after
1, 3, 7 s, and some give up or get reset. The test stops the only worker, so nothing
accepts, and opens more connections than asyncio's default would queue: the kernel
completes every one of them into the accept queue, and the worker serves them once it
runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from support.clients import join
from support.processes import Stack, wait_until

pytestmark = pytest.mark.timeout(60)

CONNECTIONS = 600  # past asyncio's default backlog of 100, within the kernel's somaxconn
SOMAXCONN = int(Path("/proc/sys/net/core/somaxconn").read_text())


async def _connect(host: str, port: int) -> asyncio.StreamWriter | None:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    except (OSError, TimeoutError):
        return None
    return writer


async def test_a_stopped_worker_still_has_every_pending_connection_queued(
    stack: Stack, tmp_path: Path
) -> None:
    if SOMAXCONN < CONNECTIONS:
        pytest.skip(f"net.core.somaxconn is {SOMAXCONN}, below the {CONNECTIONS} this needs")
    server = stack.edge(workers=1, broker=f"unix:{tmp_path / 'broker.sock'}")
    wait_until(lambda: len(server.worker_pids()) == 1, 10, "one worker")
    (worker,) = server.worker_pids()
    host, port = server.bind.rsplit(":", 1)
    os.kill(worker, signal.SIGSTOP)
    started = time.monotonic()
    try:
        writers = await asyncio.gather(*(_connect(host, int(port)) for _ in range(CONNECTIONS)))
        queued = sum(w is not None for w in writers)
        seconds = time.monotonic() - started
    finally:
        os.kill(worker, signal.SIGCONT)
    for writer in writers:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    ws, hello = await join(f"{server.ws_url}/ws/group/probe/", open_timeout=10)
    await ws.close()
    print(
        f"\nworker stopped: {queued} of {CONNECTIONS} TCP connections completed by the "
        f"kernel in {seconds:.2f}s (asyncio's default backlog would queue about 100); "
        f"after SIGCONT worker {hello['pid']} served a handshake"
    )
    assert queued == CONNECTIONS
    assert int(hello["pid"]) == worker
