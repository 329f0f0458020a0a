"""Broker micro-benchmark: a group send costs the broker the same CPU whatever the
group's size, because the broker fans out once per subscribed edge stream.

It starts the real broker (``python -m django_ws_broker --listen unix:...``) and attaches
four real gRPC ``Attach`` streams, as four edge workers would, each subscribed to two
groups: ``bench_small`` (10 members at the edges: 3, 3, 2, 2) and ``bench_big`` (10,000
members: 2,500 per edge). Members live at the edge, so each stream counts a delivery once
per local member, as an edge worker hands it to its consumers; the broker never sees
them. A fifth stream publishes, in frames of ``batch`` publishes, as an edge batches its
consumers' ``group_send`` calls. The broker process's CPU time (psutil, user + system)
is read before and after each run of publishes; small and big runs alternate, and the
cheapest run of each is compared (other load only adds CPU time), medians beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.processes import ManagedProcess, ProcessRegistry
from bench.systems import broker_command, python_env
from django_ws_proto.credentials import EDGE_KEY, edge_id_for, new_edge_key
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

GROUPS = {"small": ("bench_small", 10), "big": ("bench_big", 10_000)}


def _members_per_edge(members: int, edges: int) -> list[int]:
    return [members // edges + (1 if k < members % edges else 0) for k in range(edges)]


class EdgeStream:
    """One Attach stream acting as an edge worker with local members."""

    def __init__(
        self,
        stub: broker_pb2_grpc.BrokerStub,
        local: dict[str, int],
        progress: asyncio.Event,
    ) -> None:
        self.stub = stub
        self.progress = progress  # set whenever deliveries arrive
        # A real edge's id is derived from a key it proves on Attach; this one too.
        self.edge_key = new_edge_key()
        self.edge_id = edge_id_for(self.edge_key)
        self.local = local  # group -> members this edge holds
        self.queue: asyncio.Queue[broker_pb2.EdgeFrame | None] = asyncio.Queue()
        self.received: dict[str, int] = dict.fromkeys(local, 0)
        self.member_deliveries = 0
        self.dropped = 0
        self.welcome = asyncio.Event()
        self.synced: dict[int, asyncio.Event] = {}
        self.task: asyncio.Task[None] | None = None

    async def _requests(self) -> Any:
        while True:
            frame = await self.queue.get()
            if frame is None:
                return
            yield frame

    async def run(self) -> None:
        call = self.stub.Attach(self._requests(), metadata=((EDGE_KEY, self.edge_key),))
        async for frame in call:
            if frame.HasField("welcome"):
                self.welcome.set()
            self.dropped += frame.dropped
            for delivery in frame.deliveries:
                self.received[delivery.group] += 1
                self.member_deliveries += self.local[delivery.group]
            if frame.deliveries:
                self.progress.set()
            if frame.synced and frame.synced in self.synced:
                self.synced[frame.synced].set()

    async def start(self, subscribe: list[str]) -> None:
        self.queue.put_nowait(
            broker_pb2.EdgeFrame(
                hello=broker_pb2.Hello(edge_id=self.edge_id, ordinal=0, shards=1),
                subscribe=subscribe,
            )
        )
        self.task = asyncio.get_running_loop().create_task(self.run())
        await asyncio.wait_for(self.welcome.wait(), 10)

    async def sync(self, token: int) -> None:
        event = self.synced[token] = asyncio.Event()
        self.queue.put_nowait(broker_pb2.EdgeFrame(sync=token))
        await asyncio.wait_for(event.wait(), 30)

    async def stop(self) -> None:
        self.queue.put_nowait(None)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self.task


def _event(payload_bytes: int) -> broker_pb2.Event:
    body = json.dumps({"type": "relay", "text": "x" * payload_bytes}, separators=(",", ":"))
    return broker_pb2.Event(type="relay", kind=broker_pb2.EVENT_KIND_DICT, body=body.encode())


async def _publish_run(
    publisher: EdgeStream,
    edges: list[EdgeStream],
    group: str,
    count: int,
    batch: int,
    window: int,
    event: broker_pb2.Event,
) -> None:
    """Publish ``count`` events to ``group`` with at most ``window`` undelivered, so the
    broker's bounded queues never drop (a drop would make the run cheaper, not fairer)."""
    start = [e.received[group] for e in edges]
    progress = edges[0].progress

    async def delivered_at_least(wanted: int) -> None:
        while min(e.received[group] - s for e, s in zip(edges, start, strict=True)) < wanted:
            progress.clear()
            await progress.wait()

    sent = 0
    while sent < count:
        chunk = min(batch, count - sent)
        frame = broker_pb2.EdgeFrame(
            publish=[
                broker_pb2.Publish(group=group, event=event, sent_at=time.time())
                for _ in range(chunk)
            ]
        )
        publisher.queue.put_nowait(frame)
        sent += chunk
        await delivered_at_least(sent - window)
    await delivered_at_least(count)


async def _measure(
    broker: psutil.Process,
    publisher: EdgeStream,
    edges: list[EdgeStream],
    name: str,
    count: int,
    batch: int,
    window: int,
    event: broker_pb2.Event,
) -> dict[str, Any]:
    group, _members = GROUPS[name]
    deliveries_before = sum(e.member_deliveries for e in edges)
    times = broker.cpu_times()
    wall = time.monotonic()
    await _publish_run(publisher, edges, group, count, batch, window, event)
    after = broker.cpu_times()
    wall = time.monotonic() - wall
    cpu = (after.user + after.system) - (times.user + times.system)
    return {
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpu_us_per_publish": cpu / count * 1e6,
        "member_deliveries": sum(e.member_deliveries for e in edges) - deliveries_before,
    }


async def run_broker_micro(
    registry: ProcessRegistry,
    workdir: Path,
    *,
    publishes: int = 50_000,
    rounds: int = 5,
    edges: int = 4,
    batch: int = 20,
    window: int = 2_000,
    payload_bytes: int = 100,
    log: Any = print,
) -> dict[str, Any]:
    socket_path = workdir / "micro-broker.sock"
    address = f"unix:{socket_path}"
    process = registry.start(
        ManagedProcess(
            name="broker (micro-benchmark)",
            args=broker_command(address),
            log_path=workdir / "micro-broker.log",
            cwd=workdir,
            env=python_env(),
        )
    )
    try:
        channels = []
        async with grpc.aio.insecure_channel(address) as probe:
            deadline = time.monotonic() + 20
            while True:
                process.check_alive()
                try:
                    reply = await health_pb2_grpc.HealthStub(probe).Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=0.5
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the broker did not serve in 20s:\n{process.log()}")
                await asyncio.sleep(0.05)
        # One channel (one HTTP/2 connection) per edge, as separate edge processes have.
        progress = asyncio.Event()
        subscribers: list[EdgeStream] = []
        for k in range(edges):
            channel = grpc.aio.insecure_channel(address)
            channels.append(channel)
            local = {GROUPS[n][0]: _members_per_edge(GROUPS[n][1], edges)[k] for n in GROUPS}
            subscribers.append(
                EdgeStream(broker_pb2_grpc.BrokerStub(channel), local, progress)
            )
        publisher_channel = grpc.aio.insecure_channel(address)
        channels.append(publisher_channel)
        publisher = EdgeStream(broker_pb2_grpc.BrokerStub(publisher_channel), {}, progress)
        try:
            for edge in subscribers:
                await edge.start([GROUPS[n][0] for n in GROUPS])
            await publisher.start([])
            for k, edge in enumerate(subscribers, start=1):
                await edge.sync(k)  # every subscription applied before the clock starts
            broker = psutil.Process(process.pid)
            event = _event(payload_bytes)
            # Warm-up: the first publishes pay for imports and allocations.
            for name in GROUPS:
                await _measure(
                    broker,
                    publisher,
                    subscribers,
                    name,
                    min(2_000, publishes),
                    batch,
                    window,
                    event,
                )
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in GROUPS}
            for round_index in range(rounds):
                order = list(GROUPS) if round_index % 2 == 0 else list(reversed(GROUPS))
                for name in order:
                    result = await _measure(
                        broker, publisher, subscribers, name, publishes, batch, window, event
                    )
                    runs[name].append(result)
                    log(
                        f"    {GROUPS[name][0]:<12} {GROUPS[name][1]:>6} members: "
                        f"{result['cpu_us_per_publish']:6.1f} us broker CPU per publish "
                        f"({publishes} publishes in {result['wall_seconds']:.2f}s)"
                    )
            dropped = sum(e.dropped for e in subscribers)
        finally:
            for edge in [*subscribers, publisher]:
                await edge.stop()
            for channel in channels:
                await channel.close()
        summary: dict[str, Any] = {
            "edges": edges,
            "batch": batch,
            "rounds": rounds,
            "payload_bytes": payload_bytes,
            "dropped": dropped,
        }
        for name, (group, members) in GROUPS.items():
            costs = [r["cpu_us_per_publish"] for r in runs[name]]
            # The least disturbed run is the cheapest one: other load on the machine
            # (caches, hyperthreads, the hypervisor) only ever adds CPU time.
            summary[name] = {
                "group": group,
                "members": members,
                "publishes": publishes,
                "cpu_us_per_publish": min(costs),
                "median_us_per_publish": statistics.median(costs),
                "runs_us_per_publish": [round(r["cpu_us_per_publish"], 2) for r in runs[name]],
                "deliveries": sum(r["member_deliveries"] for r in runs[name]),
                "deliveries_expected": publishes * members * rounds,
            }
        summary["ratio"] = (
            summary["big"]["cpu_us_per_publish"] / summary["small"]["cpu_us_per_publish"]
        )
        summary["within_20_percent"] = abs(summary["ratio"] - 1) <= 0.2
        return summary
    finally:
        registry.stop(process)
