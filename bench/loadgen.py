"""Driving the Node.js load generators (``bench/loadgen/loadgen.js``).

Several generator processes share a scenario's connections. The harness talks to each
with JSON lines (commands on stdin, answers on stdout) and merges what they report:
messages sent per room, messages received per connection, latency histograms and
their own CPU use, which decides whether a result is valid at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOADGEN_DIR = Path(__file__).resolve().parent / "loadgen"
SCRIPT = LOADGEN_DIR / "loadgen.js"

NODE_MISSING = (
    "node and npm are needed for the load generator: on Debian or Ubuntu "
    "`sudo apt-get install -y nodejs npm` (Node.js 18 or later)."
)

LIVE_GENERATORS: set[int] = set()
"""Pids of generator processes not yet stopped, killed by :func:`kill_generators`."""

CLOSE_GRACE_SECONDS = 0.2
"""Wait after the last expected delivery before counting a step's closed connections."""

BUCKETS_PER_E = 100
"""Histogram resolution shared with loadgen.js: bucket i starts at e^(i/100) microseconds."""


def kill_generators() -> None:
    """Kill generators left running (the run was interrupted mid-step)."""
    for pid in list(LIVE_GENERATORS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        LIVE_GENERATORS.discard(pid)


def ensure_node_modules() -> None:
    """Install the generator's npm packages from its lock file when they are missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError(NODE_MISSING)
    if (LOADGEN_DIR / "node_modules" / "ws" / "package.json").exists():
        return
    print("installing the load generator's npm packages (npm ci) ...", flush=True)
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=LOADGEN_DIR, check=True
    )


@dataclass(frozen=True)
class ConnSpec:
    """One client connection: its id, path, room number, member index and room size,
    and the local address it connects from (None: the kernel's choice, 127.0.0.1)."""

    id: int
    path: str
    room: int
    member: int
    room_size: int
    source: str | None = None

    def wire(self) -> list[Any]:
        return [self.id, self.path, self.room, self.member, self.room_size, self.source]


def chat_connections(connections: int, room_size: int) -> list[ConnSpec]:
    """``connections`` members in rooms of ``room_size``, ordered so that consecutive
    connections are in different rooms (round-robin senders then spread over rooms)."""
    rooms = max(1, math.ceil(connections / room_size))
    specs = []
    for index in range(connections):
        room = index % rooms
        member = index // rooms
        size = len(range(room, connections, rooms))
        specs.append(ConnSpec(index, f"/ws/chat/r{room}/", room, member, size))
    return specs


def echo_connections(connections: int) -> list[ConnSpec]:
    return [ConnSpec(index, "/ws/echo/", -1, 0, 1) for index in range(connections)]


class Histogram:
    """Merged latency histogram (microseconds, ~1% buckets) with percentiles."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.max_us = 0.0

    def add(self, pairs: list[list[int]], max_us: float) -> None:
        for index, count in pairs:
            self.counts[index] = self.counts.get(index, 0) + count
        self.max_us = max(self.max_us, max_us)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile_ms(self, q: float) -> float | None:
        """The latency at quantile ``q`` (0..1), in ms, from the bucket's upper bound."""
        total = self.total
        if not total:
            return None
        rank = q * total
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                upper_us = math.exp((index + 1) / BUCKETS_PER_E)
                return round(min(upper_us, max(self.max_us, 1.0)) / 1000, 3)
        return round(self.max_us / 1000, 3)

    def summary(self) -> dict[str, float | None]:
        return {
            "p50_ms": self.percentile_ms(0.50),
            "p90_ms": self.percentile_ms(0.90),
            "p99_ms": self.percentile_ms(0.99),
            "p999_ms": self.percentile_ms(0.999),
            "max_ms": round(self.max_us / 1000, 3) if self.total else None,
        }


class GeneratorProcess:
    """One ``node loadgen.js`` process and its command channel."""

    def __init__(self, index: int, process: asyncio.subprocess.Process) -> None:
        self.index = index
        self.process = process
        self.conns: list[ConnSpec] = []

    @classmethod
    async def start(cls, index: int) -> GeneratorProcess:
        process = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node",
            str(SCRIPT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=LOADGEN_DIR,
            start_new_session=True,
            limit=64 * 1024 * 1024,
        )
        LIVE_GENERATORS.add(process.pid)
        return cls(index, process)

    async def ask(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(
                f"load generator {self.index} exited (code {self.process.returncode})"
            )
        answer: dict[str, Any] = json.loads(line)
        if answer.get("ev") == "error":
            raise RuntimeError(f"load generator {self.index}: {answer.get('error')}")
        return answer

    async def stop(self) -> None:
        try:
            if self.process.returncode is not None:
                return
            with contextlib.suppress(Exception):
                await self.ask({"cmd": "close"}, timeout=5)
            try:
                await asyncio.wait_for(self.process.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        finally:
            LIVE_GENERATORS.discard(self.process.pid)


class LoadGenerators:
    """A set of generator processes sharing one scenario's connections."""

    def __init__(self, generators: list[GeneratorProcess]) -> None:
        self.generators = generators
        self.conns: list[ConnSpec] = []

    @classmethod
    async def start(cls, count: int) -> LoadGenerators:
        generators: list[GeneratorProcess] = []
        try:
            for index in range(count):
                generators.append(await GeneratorProcess.start(index))
        except BaseException:
            for generator in generators:
                await generator.stop()
            raise
        return cls(generators)

    async def stop(self) -> None:
        await asyncio.gather(*(g.stop() for g in self.generators), return_exceptions=True)

    def pids(self) -> list[int]:
        return [g.process.pid for g in self.generators]

    async def _all(self, commands: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(g.ask(c, timeout) for g, c in zip(self.generators, commands, strict=True))
            )
        )

    async def open(
        self, url: str, conns: list[ConnSpec], concurrency: int = 64, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Open ``conns``, dealt round-robin over the generators; returns totals."""
        self.conns = conns
        for generator in self.generators:
            generator.conns = conns[generator.index :: len(self.generators)]
        per_generator = max(1, concurrency // len(self.generators))
        answers = await self._all(
            [
                {
                    "cmd": "open",
                    "url": url,
                    "conns": [c.wire() for c in g.conns],
                    "concurrency": per_generator,
                    "timeout": timeout,
                }
                for g in self.generators
            ],
            timeout=timeout * 4 + 60,
        )
        errors: dict[str, int] = {}
        histogram = Histogram()
        for answer in answers:
            for key, count in answer["errors"].items():
                errors[key] = errors.get(key, 0) + count
            histogram.add(answer.get("connect_hist", []), answer.get("max_connect_us", 0))
        return {
            "ok": sum(a["ok"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "errors": errors,
            "seconds": max(a["seconds"] for a in answers),
            "connect_latency": histogram.summary()
            | {"p95_ms": histogram.percentile_ms(0.95)},
            "generator_cpu": [round(a.get("cpu", 0.0), 3) for a in answers],
        }

    async def poll(self) -> dict[str, Any]:
        """Connections open now, closes seen since they opened (by code), and the
        generators' CPU seconds so far."""
        polls = await self._all([{"cmd": "poll"}] * len(self.generators), timeout=30)
        closes: dict[str, int] = {}
        for answer in polls:
            for code, count in answer["closes"].items():
                closes[code] = closes.get(code, 0) + count
        return {
            "open": sum(p["open"] for p in polls),
            "closes": closes,
            "cpu_seconds": [p["cpu_seconds"] for p in polls],
        }

    async def reopen_closed(self, url: str, timeout: float = 60.0) -> dict[str, int]:
        """Open again every connection the server closed; returns how many."""
        answers = await self._all(
            [{"cmd": "reopen", "url": url, "timeout": timeout}] * len(self.generators),
            timeout=timeout * 4 + 60,
        )
        return {
            "reopened": sum(a["reopened"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
        }

    # Fan-out -------------------------------------------------------------------------

    async def fanout_step(
        self,
        step: int,
        publish_rate: float,
        duration: float,
        payload_bytes: int,
        drain_timeout: float,
    ) -> dict[str, Any]:
        """Publish at ``publish_rate`` messages/s for ``duration`` s, wait until every
        delivery arrived (or ``drain_timeout``), and count exactly what is missing."""
        total = len(self.conns)
        # Each generator sends floor(its rate x duration): that, summed, is the plan.
        planned = sum(
            math.floor(publish_rate * len(g.conns) / total * duration) for g in self.generators
        )
        published = await self._all(
            [
                {
                    "cmd": "publish",
                    "step": step,
                    "rate": publish_rate * len(g.conns) / total,
                    "duration": duration,
                    "bytes": payload_bytes,
                }
                for g in self.generators
            ],
            timeout=duration + 60,
        )
        sent_by_room: dict[int, int] = {}
        for answer in published:
            for room, count in answer["sent_by_room"]:
                sent_by_room[room] = sent_by_room.get(room, 0) + count
        expected = sum(sent_by_room.get(c.room, 0) for c in self.conns)
        loop = asyncio.get_running_loop()
        drain_started = loop.time()
        while True:
            polls = await self._all([{"cmd": "poll"}] * len(self.generators), timeout=30)
            received = sum(p["received"] for p in polls)
            if received >= expected or loop.time() - drain_started > drain_timeout:
                break
            await asyncio.sleep(0.05)
        drain_seconds = loop.time() - drain_started
        # A server that closes a member (1013) sends the close frame after the data it
        # had queued: give such frames a moment to arrive, so the step owns its closes.
        await asyncio.sleep(CLOSE_GRACE_SECONDS)
        collected = await self._all([{"cmd": "collect"}] * len(self.generators), timeout=30)
        histogram = Histogram()
        missing = extra = received = 0
        closes: dict[str, int] = {}
        late = gaps = reorders = foreign = still_open = 0
        for generator, answer in zip(self.generators, collected, strict=True):
            histogram.add(answer["hist"], answer["max_latency_us"])
            for conn, got in zip(generator.conns, answer["received"], strict=True):
                want = sent_by_room.get(conn.room, 0)
                received += got
                missing += max(0, want - got)
                extra += max(0, got - want)
            for code, count in answer["closes"].items():
                closes[code] = closes.get(code, 0) + count
            late += answer["late"]
            gaps += answer["gaps"]
            reorders += answer["reorders"]
            foreign += answer["foreign"]
            still_open += answer["open"]
        sent = sum(a["sent"] for a in published)
        seconds = max(a["seconds"] for a in published)
        return {
            "planned": planned,
            "sent": sent,
            "skipped": sum(a["skipped"] for a in published),
            "expected": expected,
            "received": received,
            "missing": missing,
            "duplicates": extra,
            "late_from_earlier_steps": late,
            "gaps": gaps,
            "reorders": reorders,
            "foreign": foreign,
            "closes": closes,
            "open": still_open,
            "publish_seconds": seconds,
            "drain_seconds": round(drain_seconds, 3),
            "publishes_per_s": sent / seconds if seconds else 0.0,
            "deliveries_per_s": received / seconds if seconds else 0.0,
            "latency": histogram.summary(),
            "generator_cpu": [round(a["cpu"], 3) for a in published],
            "generator_cpu_with_drain": [round(a["cpu_total"], 3) for a in collected],
            "generator_max_loop_lag_ms": max(a["max_loop_lag_ms"] for a in collected),
            "max_buffered_bytes": max(a["max_buffered"] for a in published),
        }

    # Echo ----------------------------------------------------------------------------

    async def echo(self, duration: float, payload_bytes: int) -> dict[str, Any]:
        answers = await self._all(
            [{"cmd": "echo", "duration": duration, "bytes": payload_bytes}] * len(self.generators),
            timeout=duration + 60,
        )
        histogram = Histogram()
        for answer in answers:
            histogram.add(answer["hist"], answer["max_latency_us"])
        round_trips = sum(a["round_trips"] for a in answers)
        seconds = max(a["seconds"] for a in answers)
        closes: dict[str, int] = {}
        for answer in answers:
            for code, count in answer["closes"].items():
                closes[code] = closes.get(code, 0) + count
        return {
            "round_trips": round_trips,
            "seconds": seconds,
            "round_trips_per_s": round_trips / seconds if seconds else 0.0,
            "latency": histogram.summary(),
            "generator_cpu": [round(a["cpu"], 3) for a in answers],
            "foreign": sum(a["foreign"] for a in answers),
            "closes": closes,
            "open": sum(a["open"] for a in answers),
        }
