"""Forks of a process that used ``GRPCChannelLayer``, run in a fresh interpreter so
that nothing else of the test run (other tests' gRPC channels) is in the parent.

``python layer_fork.py closed ADDRESS`` prints one JSON line with what it saw: the
parent used the layer in a loop that ended, forks, and both go on. (A fork while the
parent's streams are open is not tested: the child may hang inside gRPC's own fork
handling before any Python runs; see docs/drop-in-layer.md.)
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import time
from typing import Any

from django_ws_client.layers import GRPCChannelLayer


def _child_uses_the_layer(layer: GRPCChannelLayer, results: Any, go: Any) -> None:
    """In the forked child: use the layer the parent used, with a parent member."""

    async def main() -> None:
        inherited = set(layer._cores)  # whatever the parent's layer held, copied by fork
        channel = await layer.new_channel()
        await layer.group_add("fork-child", channel)
        edge = layer._core().edge_id
        reused = len(inherited & set(layer._cores))
        results.put(("child-ready", edge, reused, channel))
        assert await asyncio.to_thread(go.wait, 20)
        message = await asyncio.wait_for(layer.receive(channel), 10)
        await layer.group_send("fork-parent", {"type": "reply", "text": f"got {message['text']}"})
        await layer.close()

    try:
        asyncio.run(main())
        results.put(("child-done",))
    except BaseException as exc:
        results.put(("child-failed", repr(exc)))


def closed(address: str) -> dict[str, Any]:
    layer = GRPCChannelLayer(address=address)

    async def parent_first_use() -> str:
        channel = await layer.new_channel()
        await layer.group_add("fork-parent", channel)
        await layer.group_send("fork-parent", {"type": "before.fork"})
        assert (await layer.receive(channel))["type"] == "before.fork"
        return layer._core().edge_id

    first_edge = asyncio.run(parent_first_use())
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    go = context.Event()
    started = time.perf_counter()
    child = context.Process(target=_child_uses_the_layer, args=(layer, results, go))
    child.start()
    try:

        async def parent_exchange() -> tuple[str, Any, dict[str, Any]]:
            channel = await layer.new_channel()
            await layer.group_add("fork-parent", channel)
            ready = await asyncio.to_thread(results.get, True, 20)
            go.set()
            await layer.group_send("fork-child", {"type": "hello", "text": "from parent"})
            reply = await asyncio.wait_for(layer.receive(channel), 10)
            edge = layer._core().edge_id
            await layer.close()
            return edge, ready, reply

        parent_edge, ready, reply = asyncio.run(parent_exchange())
        took = time.perf_counter() - started
        done = results.get(timeout=10)
        child.join(10)
        return {
            "first_edge": first_edge,
            "parent_edge": parent_edge,
            "ready": list(ready),
            "reply": reply,
            "done": list(done),
            "exitcode": child.exitcode,
            "ms": took * 1000,
        }
    finally:
        if child.is_alive():
            child.kill()
            child.join(5)


if __name__ == "__main__":
    import django

    django.setup()  # a Channels project's settings (the test project's, from the test)
    scenario, address = sys.argv[1], sys.argv[2]
    assert scenario == "closed", scenario
    outcome = closed(address)
    print(json.dumps(outcome), flush=True)
