"""The scenarios and how each is run against one system.

S1-S3 are fan-out: clients in rooms, every message goes to every member of its room
(sender included). The harness runs a warm-up, a step at a fixed rate common to all
systems, then steps the rate up until a step fails: any delivery missing, p99 at or
above the latency limit, a connection closed, or a generator saturated (then the
result is invalid, not failed). S4 is a closed-loop echo, S5 idle connections. S6
opens as many idle connections as the servers' open file limits allow and measures
memory and idle CPU (pings) per connection; S7 is a connect storm.

Rates are in deliveries per second (messages received by clients); the publish rate of
a step is that divided by the room size.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from bench.capacity import open_file_limit, per_source, server_capacity, with_sources
from bench.loadgen import LoadGenerators, chat_connections, echo_connections
from bench.processes import tree_cpu_split, tree_usage
from bench.systems import RunningSystem


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: str  # "fanout", "echo", "idle", "many_idle" (S6) or "storm" (S7)
    connections: int  # many_idle: the most to open (fewer where file limits say so)
    room_size: int = 1
    fixed_rate: float = 0.0  # deliveries/s, fan-out only
    ladder: tuple[float, ...] = ()  # deliveries/s, fan-out only
    idle_seconds: float = 0.0  # many_idle: how long idle CPU is measured
    concurrency: int = 0  # many_idle and storm: handshakes in flight, all generators
    generators: int = 0  # many_idle and storm: generator processes (0: --generators)

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunOptions:
    """How long and how hard: every field is a command-line flag."""

    step_seconds: float = 5.0
    warmup_seconds: float = 2.0
    drain_seconds: float = 2.0
    refine: int = 2
    patience: int = 2
    retries: int = 1
    generators: int = 2
    payload_bytes: int = 100
    latency_limit_ms: float = 100.0
    generator_cpu_limit: float = 0.9
    settle_seconds: float = 2.0
    pause_seconds: float = 0.3
    quiet_cores: float = 0.2
    quiet_max_seconds: float = 60.0
    profile_rate: float | None = None
    profile_echo: bool = False
    profile_dir: Path | None = None


def geometric_ladder(start: float, factor: float, top: float) -> tuple[float, ...]:
    """``start``, ``start*factor``, ... up to ``top``, rounded to 2 significant digits."""
    rates: list[float] = []
    rate = start
    while rate <= top * 1.0001:
        rates.append(_round2(rate))
        rate *= factor
    return tuple(rates)


def _round2(rate: float) -> float:
    if rate <= 0:
        return rate
    magnitude = 10 ** (math.floor(math.log10(rate)) - 1)
    return float(round(rate / magnitude) * magnitude)


MANY_IDLE_MAX = 40_000
"""S6's default ceiling: the file limits usually decide first (20,000 descriptors a
process on the reference machine: about 35,000 connections on two workers)."""

IDLE_SECONDS = 40.0
"""S6's idle window: two ping intervals, so every connection is pinged twice."""

PING_INTERVAL_SECONDS = 20.0
"""The keepalive ping interval S6 runs with: the default of django-ws
(``WEBSOCKET_SERVER['PING_INTERVAL']``), of websockets' ``serve()`` and of uvicorn
(``--ws-ping-interval``); none of them is changed."""

SEVERAL_GENERATORS = 4
"""Generator processes of S6 and S7 unless ``--generators`` says otherwise: each holds
a share of the connections (and of the file descriptors)."""

QUIET_SAMPLE_SECONDS = 0.5
"""How long each look at the server's CPU lasts while waiting for it to be quiet."""

MIN_PUBLISHES_PER_STEP = 5
"""A fan-out step publishes at least this many messages, or the ladder skips its rate
(in one room of 1,000, 250 deliveries/s would be one message every 4 seconds)."""


def default_scenarios(
    quick: bool,
    *,
    step_seconds: float,
    ladder_start: float | None = None,
    ladder_factor: float | None = None,
    ladder_top: float | None = None,
    idle_connections: int | None = None,
    scale: float = 1.0,
    fixed_rates: dict[str, float] | None = None,
    rates: tuple[float, ...] | None = None,
    many_idle_connections: int | None = None,
    idle_seconds: float | None = None,
    storm_connections: int | None = None,
    storm_concurrency: int | None = None,
    generators: int | None = None,
) -> dict[str, Scenario]:
    """The seven scenarios, sized for a 2-core machine (``scale`` multiplies the
    connection counts on bigger ones; ``quick`` shrinks everything for a smoke run)."""
    if quick:
        start, factor, top = ladder_start or 1000.0, ladder_factor or 4.0, ladder_top or 64000.0
        conns, echo_conns, idle = 200, 50, idle_connections or 500
        many, window = many_idle_connections or 2000, idle_seconds or 5.0
        storm, in_flight = storm_connections or 2000, storm_concurrency or 200
    else:
        start, factor, top = ladder_start or 250.0, ladder_factor or 2.0, ladder_top or 256000.0
        conns, echo_conns, idle = 1000, 100, idle_connections or 2000
        many, window = many_idle_connections or MANY_IDLE_MAX, idle_seconds or IDLE_SECONDS
        storm, in_flight = storm_connections or 20_000, storm_concurrency or 1000
    several = generators or SEVERAL_GENERATORS
    conns = int(conns * scale)
    ladder = rates or geometric_ladder(start, factor, top)
    fixed = {"S1": 500.0, "S2": 1000.0, "S3": 2000.0, **(fixed_rates or {})}

    def fanout(key: str, title: str, room_size: int) -> Scenario:
        lowest = room_size * MIN_PUBLISHES_PER_STEP / step_seconds
        rates = tuple(rate for rate in ladder if rate >= lowest) or (ladder[-1],)
        return Scenario(key, title, "fanout", conns, room_size, max(fixed[key], lowest), rates)

    return {
        "S1": fanout("S1", f"{conns} connections in rooms of 2", 2),
        "S2": fanout("S2", f"{conns} connections in rooms of 20", 20),
        "S3": fanout("S3", f"{conns} connections in one room", conns),
        "S4": Scenario(
            "S4", f"echo, {int(echo_conns * scale)} connections", "echo", int(echo_conns * scale)
        ),
        "S5": Scenario(
            "S5",
            f"{int(idle * scale)} idle connections in rooms of 20",
            "idle",
            int(idle * scale),
            20,
        ),
        "S6": Scenario(
            "S6",
            f"as many idle connections as the file limits allow (at most {int(many * scale):,}), "
            f"rooms of 20, {window:g} s idle with default pings",
            "many_idle",
            int(many * scale),
            20,
            idle_seconds=window,
            concurrency=256,
            generators=several,
        ),
        "S7": Scenario(
            "S7",
            f"connect storm: {int(storm * scale):,} connections in rooms of 20, "
            f"{in_flight:,} handshakes in flight",
            "storm",
            int(storm * scale),
            20,
            concurrency=in_flight,
            generators=several,
        ),
    }


def custom_fanout(connections: int, rooms: int, rates: tuple[float, ...]) -> Scenario:
    """A fan-out scenario of the user's size (``--connections``/``--rooms``)."""
    room_size = max(1, math.ceil(connections / rooms))
    fixed = rates[0] if rates else 100.0
    return Scenario(
        "custom",
        f"{connections} connections in {rooms} rooms",
        "fanout",
        connections,
        room_size,
        fixed,
        rates,
    )


# Measuring ---------------------------------------------------------------------------


class CpuMeter:
    """CPU used during a step by the server, and by everything else on the machine.

    The machine may be shared, so each step also records how many cores processes other
    than the server, the generators and this harness kept busy: a step measured while
    someone else was compiling says so in the results.
    """

    def __init__(self, server: list[psutil.Process], generator_pids: list[int]) -> None:
        self.server = server
        own = [psutil.Process()]
        for pid in generator_pids:
            try:
                own.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        self.own = own
        self.user_before, self.system_before = tree_cpu_split(server)
        self.own_before, _ = tree_usage(own)
        self.machine_before = _machine_busy()
        self.steal_before = getattr(psutil.cpu_times(), "steal", 0.0)
        self.wall_before = time.monotonic()

    def read(self) -> tuple[float, float]:
        """Server cores and other processes' cores, averaged since the meter started;
        ``machine_cores`` is then everything that was busy, the generators included."""
        wall = max(1e-6, time.monotonic() - self.wall_before)
        user, system = tree_cpu_split(self.server)
        user -= self.user_before
        system -= self.system_before
        server = user + system
        self.server_seconds = server  # CPU seconds, all server processes
        # The same, apart: the servers' own code, and the kernel's work for them.
        self.server_user_cores = user / wall
        self.server_system_cores = system / wall
        own = tree_usage(self.own)[0] - self.own_before
        machine = _machine_busy() - self.machine_before
        self.machine_cores = machine / wall
        # Time the hypervisor gave this VM's vCPUs to someone else: invisible load.
        self.steal_cores = (getattr(psutil.cpu_times(), "steal", 0.0) - self.steal_before) / wall
        return server / wall, max(0.0, machine - server - own) / wall


def _machine_busy() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@dataclass
class StepResult:
    rate: float
    outcome: dict[str, Any]
    server_cpu_cores: float
    passed: bool
    valid: bool
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "offered_deliveries_per_s": self.rate,
            "passed": self.passed,
            "valid": self.valid,
            "reasons": self.reasons,
            "server_cpu_cores": round(self.server_cpu_cores, 3),
            **self.outcome,
        }


class ScenarioRunner:
    """Runs one scenario against one running system."""

    def __init__(self, system: RunningSystem, options: RunOptions, log: Any) -> None:
        self.system = system
        self.options = options
        self.log = log
        self._step = 0
        self._closed_connections = False

    def _judge(self, rate: float, outcome: dict[str, Any], cpu: float) -> StepResult:
        options = self.options
        reasons: list[str] = []
        valid = True
        saturated = [c for c in outcome["generator_cpu"] if c > options.generator_cpu_limit]
        if saturated:
            valid = False
            reasons.append(f"generator saturated ({max(saturated):.0%} of a core)")
        planned = outcome["planned"]
        if outcome["sent"] + outcome["skipped"] < 0.95 * planned:
            valid = False
            reasons.append(f"generator sent {outcome['sent']} of {planned} planned")
        p99 = outcome["latency"]["p99_ms"]
        if outcome["missing"]:
            reasons.append(f"{outcome['missing']} deliveries missing")
        if outcome["closes"]:
            reasons.append(f"connections closed: {outcome['closes']}")
        if p99 is None or p99 >= options.latency_limit_ms:
            reasons.append(f"p99 {p99:.0f} ms" if p99 is not None else "nothing received")
        passed = valid and not reasons
        busy = outcome.get("machine_busy_cores", 0.0)
        if not passed and busy >= 0.9 * (os.cpu_count() or 1):
            reasons.append(f"machine saturated: {busy:.1f} of {os.cpu_count()} cores busy")
        return StepResult(rate, outcome, cpu, passed, valid, reasons)

    async def _measured_step(self, gens: LoadGenerators, rate: float, seconds: float) -> StepResult:
        self._step += 1
        self._step_seconds = seconds
        reopened = 0
        if self._closed_connections:
            # A step that overloaded the server may have closed members (1013): the
            # next step starts with every member present again, or it measures nothing.
            again = await gens.reopen_closed(self.system.url)
            reopened = again["reopened"]
            self.log(f"    reopened {reopened} connections the server had closed")
            await asyncio.sleep(self.options.pause_seconds)
        profile = self._start_profile(rate, seconds)
        meter = CpuMeter(self.system.server_tree(), gens.pids())
        outcome = await gens.fanout_step(
            self._step,
            rate / self._room_size,
            seconds,
            self.options.payload_bytes,
            self.options.drain_seconds,
        )
        cores, others = meter.read()
        outcome["server_user_cores"] = round(meter.server_user_cores, 3)
        outcome["server_system_cores"] = round(meter.server_system_cores, 3)
        outcome["other_processes_cpu_cores"] = round(others, 3)
        outcome["machine_busy_cores"] = round(meter.machine_cores, 3)
        outcome["steal_cores"] = round(meter.steal_cores, 3)
        outcome["reopened_before_step"] = reopened
        self._closed_connections = outcome["open"] < len(gens.conns)
        if profile is not None:
            outcome["profiles"] = [str(path) for path in await profile]
        result = self._judge(rate, outcome, cores)
        if profile is not None:
            # py-spy takes CPU from the server it samples: the timings are not comparable.
            result.valid = result.passed = False
            result.reasons.append("profiled step (py-spy running)")
        latency = outcome["latency"]
        self.log(
            f"    {rate:>9,.0f} deliv/s offered  got {outcome['deliveries_per_s']:>9,.0f}/s  "
            f"p50 {_ms(latency['p50_ms'])}  p99 {_ms(latency['p99_ms'])}  "
            f"missing {outcome['missing']}  server {cores:.2f} cores  "
            f"gen {max(outcome['generator_cpu']):.0%} "
            f"lag {outcome['generator_max_loop_lag_ms']:.0f} ms  "
            f"others {others:.1f}  "
            f"{'pass' if result.passed else ('INVALID' if not result.valid else 'fail')}"
            f"{'  (' + '; '.join(result.reasons) + ')' if result.reasons else ''}"
        )
        await asyncio.sleep(self.options.pause_seconds)
        quiet_after = await self._wait_until_quiet()
        result.outcome["quiet_after_s"] = round(quiet_after, 1)
        if quiet_after >= QUIET_SAMPLE_SECONDS * 2:
            self.log(
                f"    server busy for {quiet_after:.1f}s after the step (what it held back "
                "still going out); the next step starts once it is quiet"
            )
        return result

    async def _wait_until_quiet(self) -> float:
        """Wait until the server's CPU falls to ``quiet_cores``, at most
        ``quiet_max_seconds``; returns the seconds waited.

        A step that overloads a server can leave it seconds of work behind: events in
        its consumers' inboxes and in its brokers' queues, still going out after the
        step's drain. Measured on top of that backlog, the next step (often a retry or
        a lower rate between two found by the ladder) would fail for what the step
        before did, and a system that holds more back would be judged slower for it.
        How long the wait took is printed and recorded (``quiet_after_s``): that is how
        long the system needed to recover."""
        options = self.options
        started = time.monotonic()
        while True:
            meter = CpuMeter(self.system.server_tree(), [])
            await asyncio.sleep(QUIET_SAMPLE_SECONDS)
            cores, _ = meter.read()
            waited = time.monotonic() - started
            if cores <= options.quiet_cores or waited >= options.quiet_max_seconds:
                return waited

    def _start_profile(self, rate: float | None, seconds: float) -> asyncio.Task[list[Path]] | None:
        """Profile the server during this step when its rate is the one asked for, or
        during the echo step (``rate`` None) when ``--profile-echo`` asked for it."""
        options = self.options
        wanted = options.profile_echo if rate is None else rate == options.profile_rate
        if not wanted:
            return None
        from bench.profiling import record

        directory = options.profile_dir or Path("bench/results/profiles")
        directory.mkdir(parents=True, exist_ok=True)
        step = "echo" if rate is None else f"{rate:.0f}"
        tag = f"{self.system.spec.key}-{self._scenario_key}-{step}"

        async def later() -> list[Path]:
            await asyncio.sleep(min(1.0, seconds / 4))  # past the step's first moments
            return await record(self.system.server_tree(), seconds * 0.7, directory, tag)

        return asyncio.get_running_loop().create_task(later())

    async def _open(self, gens: LoadGenerators, conns: list[Any]) -> dict[str, Any]:
        opened = await gens.open(self.system.url, conns)
        self.log(
            f"    {opened['ok']} connections open in {opened['seconds']:.1f}s"
            + (f", {opened['failed']} failed: {opened['errors']}" if opened["failed"] else "")
        )
        return opened

    async def fanout(self, scenario: Scenario) -> dict[str, Any]:
        options = self.options
        self._room_size = scenario.room_size
        self._scenario_key = scenario.key
        gens = await LoadGenerators.start(options.generators)
        try:
            opened = await self._open(
                gens, chat_connections(scenario.connections, scenario.room_size)
            )
            if opened["failed"]:
                return {"error": f"{opened['failed']} connections failed to open", "open": opened}
            await gens.fanout_step(
                0,
                scenario.fixed_rate / scenario.room_size,
                options.warmup_seconds,
                options.payload_bytes,
                options.drain_seconds,
            )
            fixed = await self._measured_step(gens, scenario.fixed_rate, options.step_seconds)
            ladder: list[StepResult] = []
            best: StepResult | None = fixed if fixed.passed else None
            failures_in_a_row = 0
            for rate in scenario.ladder:
                result = await self._step_with_retries(gens, rate)
                ladder.append(result)
                if result.passed:
                    if best is None or result.rate > best.rate:
                        best = result
                    failures_in_a_row = 0
                    continue
                failures_in_a_row += 1
                # An invalid step ends the ladder (the generator is the limit); a failed
                # one only after --patience failed rates in a row, so that one noisy
                # moment on a shared machine does not end it.
                if not result.valid or failures_in_a_row >= options.patience:
                    break
            above = [s for s in ladder if not s.passed and (best is None or s.rate > best.rate)]
            lowest_failure = min(above, key=lambda s: s.rate) if above else None
            if lowest_failure is not None and lowest_failure.valid and options.refine:
                low = best.rate if best else 0.0
                high = lowest_failure.rate
                for _ in range(options.refine):
                    if low <= 0:
                        break
                    middle = _round2(math.sqrt(low * high))
                    if middle in (low, high):
                        break
                    result = await self._step_with_retries(gens, middle)
                    ladder.append(result)
                    if result.passed:
                        if best is None or result.rate > best.rate:
                            best = result
                        low = middle
                    else:
                        high = middle
                        if not result.valid:
                            break
            # What stopped the ladder: the lowest failing step above the best one.
            above = [s for s in ladder if not s.passed and (best is None or s.rate > best.rate)]
            stopper = min(above, key=lambda s: s.rate) if above else None
            if stopper is None:
                limit = "top of the ladder reached"
            elif not stopper.valid:
                limit = f"at {stopper.rate:,.0f}/s: load generator limit: " + "; ".join(
                    stopper.reasons
                )
            else:
                limit = f"at {stopper.rate:,.0f}/s: " + "; ".join(stopper.reasons)
            return {
                "open": opened,
                "fixed": fixed.as_dict(),
                "ladder": [step.as_dict() for step in sorted(ladder, key=lambda s: s.rate)],
                "max_deliveries_per_s": best.rate if best else 0.0,
                "max_achieved_deliveries_per_s": best.outcome["deliveries_per_s"] if best else 0.0,
                "max_step": best.as_dict() if best else None,
                "at_least": stopper is None or not stopper.valid,
                "limit": limit,
            }
        finally:
            await gens.stop()

    async def _step_with_retries(self, gens: LoadGenerators, rate: float) -> StepResult:
        result = await self._measured_step(gens, rate, self.options.step_seconds)
        for _ in range(self.options.retries):
            if result.passed or not result.valid:
                break
            self.log("    retrying the step once (the machine is shared)")
            result = await self._measured_step(gens, rate, self.options.step_seconds)
        return result

    async def echo(self, scenario: Scenario) -> dict[str, Any]:
        options = self.options
        gens = await LoadGenerators.start(min(options.generators, scenario.connections))
        try:
            opened = await self._open(gens, echo_connections(scenario.connections))
            if opened["failed"]:
                return {"error": f"{opened['failed']} connections failed to open", "open": opened}
            await gens.echo(options.warmup_seconds, options.payload_bytes)
            self._scenario_key = scenario.key
            profile = self._start_profile(None, options.step_seconds)
            meter = CpuMeter(self.system.server_tree(), gens.pids())
            outcome = await gens.echo(options.step_seconds, options.payload_bytes)
            cores, others = meter.read()
            if profile is not None:
                outcome["profiles"] = [str(path) for path in await profile]
            outcome["other_processes_cpu_cores"] = round(others, 3)
            saturated = [c for c in outcome["generator_cpu"] if c > options.generator_cpu_limit]
            outcome["valid"] = not saturated
            outcome["reasons"] = (
                [f"generator saturated ({max(saturated):.0%} of a core)"] if saturated else []
            )
            outcome["server_cpu_cores"] = round(cores, 3)
            latency = outcome["latency"]
            self.log(
                f"    {outcome['round_trips_per_s']:>9,.0f} round trips/s  "
                f"p50 {_ms(latency['p50_ms'])}  p99 {_ms(latency['p99_ms'])}  "
                f"server {cores:.2f} cores  gen {max(outcome['generator_cpu']):.0%}  "
                f"others {others:.1f}" + ("  INVALID" if saturated else "")
            )
            return {"open": opened, **outcome}
        finally:
            await gens.stop()

    async def idle(self, scenario: Scenario) -> dict[str, Any]:
        """RSS per idle connection, on a server that has served nothing else (the harness
        restarts it first), then again after closing them all and opening as many anew,
        when the memory the first ones made the allocator take can be reused."""
        options = self.options
        conns = chat_connections(scenario.connections, scenario.room_size)
        gens = await LoadGenerators.start(1)
        try:
            # Open and close a few first, so that code loaded lazily on the first
            # connections is in the baseline, not in the per-connection figure.
            await gens.open(self.system.url, chat_connections(40, scenario.room_size))
            await gens.stop()
            await asyncio.sleep(options.settle_seconds)
            _, before = tree_usage(self.system.server_tree())
            gens = await LoadGenerators.start(1)
            opened = await self._open(gens, conns)
            after = await self._settled_rss(options.settle_seconds)
            per_conn = (after - before) / max(1, opened["ok"])
            by_process = {}
            for process in self.system.server_tree():
                try:
                    by_process[f"{process.pid} {' '.join(process.cmdline()[:4])[-60:]}"] = (
                        process.memory_info().rss
                    )
                except Exception:
                    continue
            await gens.stop()
            closed = await self._settled_rss(options.settle_seconds)
            gens = await LoadGenerators.start(1)
            reopened = await gens.open(self.system.url, conns)
            after_reopen = await self._settled_rss(options.settle_seconds)
            per_conn_reopened = (after_reopen - closed) / max(1, reopened["ok"])
            self.log(
                f"    RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB: "
                f"{per_conn / 1024:.1f} KiB per connection; closed and reopened: "
                f"{closed / 2**20:.1f} MiB -> {after_reopen / 2**20:.1f} MiB: "
                f"{per_conn_reopened / 1024:.1f} KiB per connection"
            )
            return {
                "open": opened,
                "rss_before_bytes": before,
                "rss_after_bytes": after,
                "rss_per_connection_bytes": per_conn,
                "rss_by_process_after": by_process,
                "rss_after_close_bytes": closed,
                "rss_after_reopen_bytes": after_reopen,
                "rss_per_connection_reopened_bytes": per_conn_reopened,
                "valid": opened["failed"] == 0 and reopened["failed"] == 0,
            }
        finally:
            await gens.stop()

    async def _settled_rss(self, settle: float) -> int:
        """RSS once it stops growing (the server may still be finishing handshakes)."""
        await asyncio.sleep(settle)
        _, last = tree_usage(self.system.server_tree())
        for _ in range(10):
            await asyncio.sleep(0.5)
            _, now = tree_usage(self.system.server_tree())
            if abs(now - last) < 0.002 * last:
                return now
            last = now
        return last

    # Many connections: S6 and S7 ------------------------------------------------------

    def _sized(self, wanted: int, what: str) -> tuple[int, dict[str, Any]]:
        """``wanted`` connections, or fewer where the server's file limits say so;
        logs the limits. Returns the count and the limits for the results."""
        soft = open_file_limit()
        processes = self.system.spec.workers
        capacity = server_capacity(processes, soft)
        count = min(wanted, capacity)
        limits = {
            "open_file_limit": soft,
            "server_processes": processes,
            "server_capacity": capacity,
            "wanted": wanted,
            "connections": count,
        }
        self.log(
            f"    open file limit {soft:,} per process: {processes} server process"
            f"{'es' if processes > 1 else ''} hold about {capacity:,}; {what} {count:,}"
            + (f" (of {wanted:,} asked)" if count < wanted else "")
        )
        return count, limits

    def _generators_for(self, scenario: Scenario, count: int) -> int:
        """Enough generator processes that none holds more connections than its own
        file limit allows."""
        per_generator = max(1, open_file_limit() - 100)
        wanted = scenario.generators or self.options.generators
        return max(wanted, math.ceil(count / per_generator))

    async def _wait_quiet(self, limit_cores: float = 0.05, timeout: float = 30.0) -> None:
        """Until the server uses almost no CPU (what the scenario before left, closing
        thousands of connections, has been handled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before, _ = tree_usage(self.system.server_tree())
            await asyncio.sleep(0.5)
            after, _ = tree_usage(self.system.server_tree())
            if (after - before) / 0.5 < limit_cores:
                return

    async def many_idle(self, scenario: Scenario) -> dict[str, Any]:
        """S6: as many idle connections as the file limits allow, from several
        generators (and several source addresses where one's ports run out); RSS per
        connection, then the server's CPU while they idle, pings included, per
        connection-second."""
        options = self.options
        count, limits = self._sized(scenario.connections, "opening")
        conns, sources = with_sources(chat_connections(count, scenario.room_size))
        generators = self._generators_for(scenario, count)
        self.log(
            f"    from {generators} generators and {len(sources)} source address"
            f"{'es' if len(sources) > 1 else ''} ({', '.join(sources)}; "
            f"{per_source():,} connections each); ping interval {PING_INTERVAL_SECONDS:g} s "
            "(every server's default)"
        )
        await self._wait_quiet()
        gens = await LoadGenerators.start(1)
        try:
            # As S5: lazily loaded code goes into the baseline, not the per-connection figure.
            await gens.open(self.system.url, chat_connections(40, scenario.room_size))
        finally:
            await gens.stop()
        await asyncio.sleep(options.settle_seconds)
        # The server's own idle CPU with no client (heartbeats, timers, Redis): what
        # the per-connection figure would be with no connection at all.
        baseline = CpuMeter(self.system.server_tree(), [])
        await asyncio.sleep(min(10.0, scenario.idle_seconds / 4))
        baseline_cores, _ = baseline.read()
        _, before = tree_usage(self.system.server_tree())
        gens = await LoadGenerators.start(generators)
        try:
            opened = await self._open_many(gens, conns, scenario.concurrency)
            after = await self._settled_rss(options.settle_seconds)
            per_conn = (after - before) / max(1, opened["ok"])
            await self._wait_quiet(limit_cores=0.5)  # handshakes all done
            at_start = await gens.poll()
            meter = CpuMeter(self.system.server_tree(), gens.pids())
            started = time.monotonic()
            await asyncio.sleep(scenario.idle_seconds)
            cores, others = meter.read()
            window = time.monotonic() - started
            at_end = await gens.poll()
            idle_open = min(at_start["open"], at_end["open"])
            us_per_conn_second = meter.server_seconds / max(1, idle_open) / window * 1e6
            above_idle = max(0.0, cores - baseline_cores) / max(1, idle_open) * 1e6
            generator_cpu = [
                round((b - a) / window, 3)
                for a, b in zip(at_start["cpu_seconds"], at_end["cpu_seconds"], strict=True)
            ]
            self.log(
                f"    RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB: "
                f"{per_conn / 1024:.1f} KiB per connection; idle for {window:.0f} s: "
                f"server {cores:.3f} cores, {us_per_conn_second:.2f} us per connection-second "
                f"({above_idle:.2f} above the {baseline_cores:.3f} cores it idles at with no "
                f"connection; {idle_open:,} open; others {others:.2f} cores)"
            )
            closes = {
                code: count - at_start["closes"].get(code, 0)
                for code, count in at_end["closes"].items()
                if count - at_start["closes"].get(code, 0)
            }
            return {
                "open": opened,
                "limits": limits,
                "generators": generators,
                "source_addresses": sources,
                "ping_interval_s": PING_INTERVAL_SECONDS,
                "rss_before_bytes": before,
                "rss_after_bytes": after,
                "rss_per_connection_bytes": per_conn,
                "idle_seconds": round(window, 2),
                "idle_open": idle_open,
                "idle_closes": closes,
                "server_cpu_cores": round(cores, 4),
                "server_cpu_us_per_connection_second": us_per_conn_second,
                "server_idle_cores_without_connections": round(baseline_cores, 4),
                "server_cpu_us_per_connection_second_above_idle": above_idle,
                "other_processes_cpu_cores": round(others, 3),
                "steal_cores": round(meter.steal_cores, 3),
                "generator_cpu_idle": generator_cpu,
                "valid": opened["failed"] == 0 and not closes,
            }
        finally:
            await gens.stop()

    async def _open_many(
        self, gens: LoadGenerators, conns: list[Any], concurrency: int
    ) -> dict[str, Any]:
        opened = await gens.open(self.system.url, conns, concurrency=concurrency, timeout=120)
        seconds = max(opened["seconds"], 1e-6)
        self.log(
            f"    {opened['ok']:,} connections open in {opened['seconds']:.1f}s "
            f"({opened['ok'] / seconds:,.0f}/s)"
            + (f", {opened['failed']:,} failed: {opened['errors']}" if opened["failed"] else "")
        )
        return opened

    async def storm(self, scenario: Scenario) -> dict[str, Any]:
        """S7: connections opened as fast as they come (``concurrency`` handshakes in
        flight over several generators); each succeeds or is refused (HTTP 503 at the
        server's connection limit), both counted. Handshakes per second per server core
        is the handshakes divided by the server's CPU time during the storm."""
        count, limits = self._sized(scenario.connections, "storming with")
        conns, sources = with_sources(chat_connections(count, scenario.room_size))
        generators = self._generators_for(scenario, count)
        await self._wait_quiet()
        gens = await LoadGenerators.start(generators)
        try:
            meter = CpuMeter(self.system.server_tree(), gens.pids())
            opened = await self._open_many(gens, conns, scenario.concurrency)
            cores, others = meter.read()
            wall = max(opened["seconds"], 1e-6)
            # The meter ran from before the first connect to after the last answer.
            cpu_seconds = meter.server_seconds
            refused = sum(n for error, n in opened["errors"].items() if "503" in error)
            other_failures = opened["failed"] - refused
            per_core = opened["ok"] / cpu_seconds if cpu_seconds > 0 else 0.0
            latency = opened["connect_latency"]
            self.log(
                f"    {opened['ok']:,} accepted, {refused:,} refused with 503, "
                f"{other_failures:,} failed otherwise; {opened['ok'] / wall:,.0f} handshakes/s, "
                f"{per_core:,.0f} per server core-second (server {cores:.2f} cores); connect "
                f"p50 {_ms(latency['p50_ms'])}  p95 {_ms(latency['p95_ms'])}  "
                f"p99 {_ms(latency['p99_ms'])}; generators "
                f"{', '.join(f'{c:.0%}' for c in opened['generator_cpu'])}"
            )
            return {
                "open": opened,
                "limits": limits,
                "generators": generators,
                "source_addresses": sources,
                "concurrency": scenario.concurrency,
                "accepted": opened["ok"],
                "refused_503": refused,
                "failed_otherwise": other_failures,
                "seconds": round(wall, 3),
                "handshakes_per_s": opened["ok"] / wall,
                "server_cpu_cores": round(cores, 3),
                "server_cpu_seconds": round(cpu_seconds, 3),
                "handshakes_per_server_core_second": per_core,
                "connect_latency": latency,
                "other_processes_cpu_cores": round(others, 3),
                "steal_cores": round(meter.steal_cores, 3),
                "valid": other_failures == 0,
            }
        finally:
            await gens.stop()

    async def run(self, scenario: Scenario) -> dict[str, Any]:
        if scenario.kind == "fanout":
            return await self.fanout(scenario)
        if scenario.kind == "echo":
            return await self.echo(scenario)
        if scenario.kind == "many_idle":
            return await self.many_idle(scenario)
        if scenario.kind == "storm":
            return await self.storm(scenario)
        return await self.idle(scenario)


def with_connections(scenario: Scenario, connections: int) -> Scenario:
    return replace(scenario, connections=connections)


def _ms(value: float | None) -> str:
    return f"{value:7.1f} ms" if value is not None else "      - ms"
