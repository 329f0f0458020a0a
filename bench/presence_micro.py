"""Presence micro-benchmark, on the real broker over real gRPC streams.

1. **Join/leave throughput per broker core.** Four Attach streams, as four edge workers,
   report members joining a presence group (each a different user, so each join is a
   ``presence.join`` event fanned out to the four streams) and then leaving them (each
   a ``presence.leave`` once the grace period, here 0, passes). The broker is one
   asyncio process on one core: its CPU time (psutil, user + system) over the run gives
   member changes per CPU second, which is per core.
2. **A group send to a presence group costs what it costs to a plain group.** The same
   four streams report 10,000 members of ``bench_presence`` (with presence) and 10,000
   of ``bench_plain`` (without); a fifth stream publishes to each in turn. The fan-out is
   once per subscribed stream either way, so the broker CPU per publish should match
   (the cheapest run of each is compared, as in :mod:`bench.broker_micro`).

``python -m bench presence`` runs it (keep the counts small on a shared machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.broker_micro import EdgeStream, _event, _members_per_edge, _publish_run
from bench.processes import ManagedProcess, ProcessRegistry
from bench.systems import broker_command, python_env
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

PRESENCE = "bench_presence"
PLAIN = "bench_plain"
CHURN = "bench_churn"


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _wait_serving(address: str, process: ManagedProcess) -> None:
    async with grpc.aio.insecure_channel(address) as probe:
        deadline = time.monotonic() + 20
        while True:
            process.check_alive()
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health_pb2_grpc.HealthStub(probe).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=0.5
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the broker did not serve in 20s:\n{process.log()}")
            await asyncio.sleep(0.05)


def _members(
    edge: EdgeStream, group: str, count: int, *, presence: bool, left: bool = False, start: int = 0
) -> list[broker_pb2.Member]:
    return [
        broker_pb2.Member(
            group=group,
            channel=f"{edge.edge_id}!m{n}",
            user="" if left else f"{edge.edge_id}.u{n}",
            info=b"" if left else b'{"id":1,"name":"bench"}',
            presence=presence,
            left=left,
        )
        for n in range(start, start + count)
    ]


async def run_presence_micro(
    registry: ProcessRegistry,
    workdir: Path,
    *,
    churn: int = 20_000,
    members: int = 10_000,
    publishes: int = 10_000,
    rounds: int = 3,
    edges: int = 4,
    batch: int = 20,
    window: int = 2_000,
    frame_members: int = 500,
    log: Any = print,
) -> dict[str, Any]:
    address = f"unix:{workdir / 'presence-broker.sock'}"
    process = registry.start(
        ManagedProcess(
            name="broker (presence micro-benchmark)",
            args=broker_command(
                address,
                "--presence-grace-seconds",
                "0",
                "--max-group-members",
                str(max(members, churn) + 1),
            ),
            log_path=workdir / "presence-broker.log",
            cwd=workdir,
            env=python_env(),
        )
    )
    channels: list[grpc.aio.Channel] = []
    try:
        await _wait_serving(address, process)
        progress = asyncio.Event()
        streams: list[EdgeStream] = []
        for k in range(edges):
            channel = grpc.aio.insecure_channel(address)
            channels.append(channel)
            local = {
                PRESENCE: _members_per_edge(members, edges)[k],
                PLAIN: _members_per_edge(members, edges)[k],
                CHURN: 1,
            }
            streams.append(EdgeStream(broker_pb2_grpc.BrokerStub(channel), local, progress))
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        publisher = EdgeStream(broker_pb2_grpc.BrokerStub(channel), {}, progress)
        try:
            for stream in streams:
                await stream.start([PRESENCE, PLAIN, CHURN])
            await publisher.start([])
            broker = psutil.Process(process.pid)
            token = 0

            async def barrier() -> None:
                nonlocal token
                for stream in streams:
                    token += 1
                    await stream.sync(token)

            async def report(
                group: str,
                counts: list[int],
                *,
                presence: bool,
                left: bool = False,
                start: int = 0,
            ) -> None:
                """Member changes in frames of ``frame_members`` per stream, a barrier
                after each round of frames, so the events they cause never overflow
                the broker's bounded queues (a drop would make the run cheaper)."""
                changes = [
                    _members(stream, group, count, presence=presence, left=left, start=start)
                    for stream, count in zip(streams, counts, strict=True)
                ]
                for i in range(0, max(counts), frame_members):
                    for stream, mine in zip(streams, changes, strict=True):
                        if mine[i : i + frame_members]:
                            stream.queue.put_nowait(
                                broker_pb2.EdgeFrame(members=mine[i : i + frame_members])
                            )
                    await barrier()

            # 1. Join/leave throughput: `churn` joins then as many leaves, over all streams.
            per_edge = _members_per_edge(churn, edges)
            events_before = sum(s.received[CHURN] for s in streams)
            cpu = _cpu(broker)
            wall = time.monotonic()
            await report(CHURN, per_edge, presence=True)
            await report(CHURN, per_edge, presence=True, left=True)
            # Every join and leave event reached every stream (leaves after the grace).
            wanted = events_before + 2 * churn
            deadline = time.monotonic() + 60
            while min(s.received[CHURN] for s in streams) < wanted:
                if time.monotonic() > deadline:
                    raise TimeoutError("presence events did not all arrive in 60s")
                progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.wait(), 1)
            churn_cpu = _cpu(broker) - cpu
            churn_wall = time.monotonic() - wall
            changes_per_cpu_second = 2 * churn / churn_cpu if churn_cpu else float("inf")
            log(
                f"    presence join/leave: {2 * churn} member changes ({churn} users joined "
                f"and left, {2 * churn * edges} events fanned out) in {churn_cpu:.2f} broker "
                f"CPU s: {changes_per_cpu_second:,.0f} changes per broker core second"
            )

            # 2. Publishes to a presence group of `members` vs a plain group of as many.
            for group, presence in ((PRESENCE, True), (PLAIN, False)):
                await report(
                    group, _members_per_edge(members, edges), presence=presence, start=10**6
                )
            event = _event(100)
            for group in (PRESENCE, PLAIN):  # warm-up
                await _publish_run(
                    publisher, streams, group, min(2_000, publishes), batch, window, event
                )
            runs: dict[str, list[float]] = {PRESENCE: [], PLAIN: []}
            for round_index in range(rounds):
                order = [PRESENCE, PLAIN] if round_index % 2 == 0 else [PLAIN, PRESENCE]
                for group in order:
                    cpu = _cpu(broker)
                    await _publish_run(publisher, streams, group, publishes, batch, window, event)
                    cost = (_cpu(broker) - cpu) / publishes * 1e6
                    runs[group].append(cost)
                    log(f"    {group:<15} {members} members: {cost:6.1f} us broker CPU per publish")
            dropped = sum(s.dropped for s in streams)
        finally:
            for stream in [*streams, publisher]:
                await stream.stop()
    finally:
        for channel in channels:
            await channel.close()
        registry.stop(process)
    presence_cost, plain_cost = min(runs[PRESENCE]), min(runs[PLAIN])
    # CPU time is counted in clock ticks (10 ms): a tiny run may measure none at all.
    ratio = presence_cost / plain_cost if plain_cost else float("nan")
    summary = {
        "edges": edges,
        "churn": {
            "users": churn,
            "member_changes": 2 * churn,
            "broker_cpu_seconds": churn_cpu,
            "wall_seconds": churn_wall,
            "changes_per_core_second": changes_per_cpu_second,
        },
        "send": {
            "members": members,
            "publishes": publishes,
            "rounds": rounds,
            "presence_us_per_publish": presence_cost,
            "plain_us_per_publish": plain_cost,
            "presence_median_us": statistics.median(runs[PRESENCE]),
            "plain_median_us": statistics.median(runs[PLAIN]),
            "ratio": ratio,
            "within_20_percent": abs(ratio - 1) <= 0.2,
        },
        "dropped": dropped,
    }
    log(
        f"    group_send to a presence group of {members} vs a plain one: "
        f"{presence_cost:.1f} vs {plain_cost:.1f} us broker CPU per publish "
        f"(ratio {ratio:.2f}, {'within' if summary['send']['within_20_percent'] else 'NOT within'}"
        " 20%)"
    )
    return summary
