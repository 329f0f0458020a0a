"""``python -m bench``: the benchmark's command line.

``run`` starts every system in turn (django-ws; Channels on both channels_redis layers,
on django-ws' GRPCChannelLayer and on channels-nats; bare websockets), runs the
scenarios against each, stops everything it started, prints the table and saves the
results as JSON (and plots). ``broker``, ``presence`` and ``stream`` run the broker's,
the presence and the in-worker stream's micro-benchmarks alone; ``report`` reprints and
replots a saved run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.capacity import raise_open_file_limit
from bench.loadgen import ensure_node_modules, kill_generators
from bench.processes import ProcessRegistry
from bench.scenarios import RunOptions, Scenario, ScenarioRunner, custom_fanout, default_scenarios
from bench.systems import (
    BENCH_DIR,
    REDIS_LAYERS,
    SystemSpec,
    ensure_nats_server,
    ensure_redis_server,
    max_connections_per_worker,
    runs_our_code,
    snapshot_baseline,
    snapshot_server_code,
    start_system,
    stop_system,
    system_specs,
)

RESULTS_DIR = BENCH_DIR / "results"
SYSTEM_ORDER = [
    "bare",
    "django-ws",
    "django-ws-w1",
    "django-ws-w1-inworker",
    "channels-djws",
    "channels-nats",
    "channels-pubsub",
    "channels-core",
]
FAN_OUT_EFFICIENCY_SCENARIOS = {"S1", "S3", "custom"}
# The one-worker systems, which only the fan-out efficiency scenarios run.
FAN_OUT_EFFICIENCY_SYSTEMS = {"django-ws-w1", "django-ws-w1-inworker"}


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the scenarios against every system")
    run.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes: 200 connections, 1 s steps, a short ladder (~3 min)",
    )
    run.add_argument(
        "--systems",
        default=",".join(SYSTEM_ORDER),
        help=f"comma-separated, from {', '.join(SYSTEM_ORDER)} (default: all)",
    )
    run.add_argument(
        "--baseline",
        metavar="COMMIT",
        help="also run django-ws (each selected django-ws system, and channels-djws where "
        "COMMIT has the layer) as it was at COMMIT, side by side in the same run: a "
        "change measured against its predecessor",
    )
    run.add_argument(
        "--scenarios",
        default="S1,S2,S3,S4,S5,S6,S7",
        help="comma-separated scenario keys (default: all, S1 to S7)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes for django-ws and uvicorn (default: number of cores)",
    )
    run.add_argument(
        "--step-seconds", type=float, help="length of each measured step (default 5, quick 1)"
    )
    run.add_argument(
        "--warmup-seconds", type=float, help="warm-up before the first step (default 2, quick 1)"
    )
    run.add_argument(
        "--drain-seconds",
        type=float,
        default=2.0,
        help="after a step, how long to wait for deliveries still on their way (default 2)",
    )
    run.add_argument(
        "--rates",
        type=_floats,
        help="the fan-out rate ladder in deliveries/s, e.g. 1000,2000,4000 (overrides "
        "--ladder-start/--ladder-factor/--ladder-top)",
    )
    run.add_argument(
        "--ladder-start",
        type=float,
        help="first ladder rate, deliveries/s (default 250, quick 1000)",
    )
    run.add_argument(
        "--ladder-factor", type=float, help="ladder growth per step (default 2, quick 4)"
    )
    run.add_argument(
        "--ladder-top", type=float, help="highest ladder rate (default 256000, quick 64000)"
    )
    run.add_argument(
        "--fixed-rate",
        type=float,
        help="the common rate at which p50/p99 are compared, deliveries/s, for every "
        "fan-out scenario (default S1 500, S2 1000, S3 2000)",
    )
    run.add_argument(
        "--refine", type=int, help="bisection steps after the first failure (default 2, quick 0)"
    )
    run.add_argument(
        "--retries", type=int, help="repeats of a failed step before it counts (default 1, quick 0)"
    )
    run.add_argument(
        "--patience",
        type=int,
        help="failed rates in a row that end a ladder (default 2, quick 1)",
    )
    run.add_argument(
        "--generators",
        type=int,
        default=None,
        help="load generator processes (default: half the cores, 1 to 4; on 2 cores one "
        "generator adds the least scheduling delay to the latencies it measures)",
    )
    run.add_argument("--payload-bytes", type=int, default=100, help="message size (default 100)")
    run.add_argument(
        "--idle-connections", type=int, help="connections of S5 (default 2000, quick 500)"
    )
    run.add_argument(
        "--many-idle-connections",
        type=int,
        help="at most this many connections in S6 (default 40000, quick 2000); fewer where "
        "the servers' open file limits allow fewer",
    )
    run.add_argument(
        "--idle-seconds",
        type=float,
        help="how long S6 measures the server's CPU while its connections idle, with "
        "20 s pings (default 40, quick 5)",
    )
    run.add_argument(
        "--storm-connections",
        type=int,
        help="connections of the S7 connect storm (default 20000, quick 2000)",
    )
    run.add_argument(
        "--storm-concurrency",
        type=int,
        help="handshakes in flight during S7, over all generators (default 1000, quick 200)",
    )
    run.add_argument(
        "--ports-per-source",
        type=int,
        help="connections per source address in S6 and S7 before the next 127.0.0.x is "
        "used (default: 80%% of the ephemeral port range)",
    )
    run.add_argument(
        "--max-connections",
        type=int,
        help="django-ws' WEBSOCKET_SERVER['MAX_CONNECTIONS'] per worker: past it, S7's "
        "handshakes are refused with 503 (default: what the open file limit allows)",
    )
    run.add_argument(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        help="WEBSOCKET_SERVER['EVENT_LOOP'] of django-ws, and the bare server's loop "
        "(default: not set, so django-ws' default, auto: uvloop when installed)",
    )
    run.add_argument(
        "--eager-tasks",
        action="store_true",
        help="WEBSOCKET_SERVER['EAGER_TASKS'] = True for django-ws (Python 3.12+)",
    )
    run.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every scenario's connection count (bigger machines)",
    )
    run.add_argument(
        "--connections",
        type=int,
        help="run one custom fan-out scenario of this many connections instead",
    )
    run.add_argument(
        "--rooms", type=int, default=2, help="rooms of the custom scenario (default 2)"
    )
    run.add_argument("--no-broker", action="store_true", help="skip the broker micro-benchmark")
    run.add_argument(
        "--broker-publishes", type=int, help="publishes per broker run (default 50000, quick 10000)"
    )
    run.add_argument(
        "--plot-dir", type=Path, help="write the PNG plots here (default: next to the JSON results)"
    )
    run.add_argument(
        "--output", type=Path, help="results JSON path (default bench/results/<time>.json)"
    )
    run.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every system this many times, in rounds (A, B, C, A, B, C, ...), and report "
        "the median run: on a shared machine, other load comes and goes",
    )
    run.add_argument(
        "--profile-rate",
        type=float,
        help="record py-spy profiles of the server processes during fan-out steps offered at "
        "this rate (deliveries/s); needs py-spy",
    )
    run.add_argument(
        "--profile-echo",
        action="store_true",
        help="record py-spy profiles of the server processes during S4's measured echo step",
    )
    run.add_argument(
        "--profile-dir",
        type=Path,
        default=BENCH_DIR / "results" / "profiles",
        help="where profiles and their summaries go (default bench/results/profiles)",
    )
    run.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the servers' logs (always kept when the run fails)",
    )

    broker = commands.add_parser("broker", help="run only the broker micro-benchmark")
    broker.add_argument("--publishes", type=int, default=50_000)
    broker.add_argument("--rounds", type=int, default=5)
    broker.add_argument("--edges", type=int, default=4)
    broker.add_argument(
        "--batch", type=int, default=20, help="publishes per Attach frame (default 20)"
    )
    broker.add_argument("--output", type=Path)

    presence = commands.add_parser(
        "presence",
        help="run only the presence micro-benchmark (join/leave throughput per broker core, "
        "group_send to a presence group vs a plain one)",
    )
    presence.add_argument("--churn", type=int, default=20_000, help="users joining and leaving")
    presence.add_argument("--members", type=int, default=10_000, help="members of each group")
    presence.add_argument("--publishes", type=int, default=10_000)
    presence.add_argument("--rounds", type=int, default=3)
    presence.add_argument("--output", type=Path)

    stream = commands.add_parser(
        "stream",
        help="run only the in-worker stream micro-benchmark (CPU per group message from "
        "a link to the broker in the same process and back)",
    )
    stream.add_argument("--rate", type=float, default=2000.0, help="messages per second")
    stream.add_argument("--seconds", type=float, default=5.0, help="length of each round")
    stream.add_argument("--rounds", type=int, default=5)
    stream.add_argument(
        "--baseline",
        metavar="REF",
        help="alternate each round with django-ws' code at this git commit",
    )
    stream.add_argument("--output", type=Path)

    report = commands.add_parser("report", help="print the table and redraw plots of a saved run")
    report.add_argument("results", type=Path)
    report.add_argument("--plot-dir", type=Path)
    return parser


def log(message: str) -> None:
    print(message, flush=True)


def _selected(text: str, known: list[str], what: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def _scenarios(args: argparse.Namespace) -> list[Scenario]:
    if args.connections:
        rates = args.rates or (100.0, 400.0)
        return [custom_fanout(args.connections, args.rooms, rates)]
    all_scenarios = default_scenarios(
        args.quick,
        step_seconds=_options(args).step_seconds,
        ladder_start=args.ladder_start,
        ladder_factor=args.ladder_factor,
        ladder_top=args.ladder_top,
        idle_connections=args.idle_connections,
        many_idle_connections=args.many_idle_connections,
        idle_seconds=args.idle_seconds,
        storm_connections=args.storm_connections,
        storm_concurrency=args.storm_concurrency,
        generators=args.generators,
        scale=args.scale,
        rates=args.rates,
        fixed_rates=dict.fromkeys(("S1", "S2", "S3"), args.fixed_rate) if args.fixed_rate else None,
    )
    chosen = _selected(args.scenarios, list(all_scenarios), "scenarios")
    scenarios = []
    for key in chosen:
        scenarios.append(all_scenarios[key])
    return scenarios


def _options(args: argparse.Namespace) -> RunOptions:
    quick = args.quick or bool(args.connections)
    return RunOptions(
        step_seconds=args.step_seconds or (1.0 if quick else 5.0),
        warmup_seconds=args.warmup_seconds
        if args.warmup_seconds is not None
        else (0.5 if quick else 2.0),
        drain_seconds=args.drain_seconds,
        refine=args.refine if args.refine is not None else (0 if quick else 2),
        retries=args.retries if args.retries is not None else (0 if quick else 1),
        patience=args.patience if args.patience is not None else (1 if quick else 2),
        generators=args.generators or max(1, min(4, (os.cpu_count() or 2) // 2)),
        payload_bytes=args.payload_bytes,
        settle_seconds=0.5 if quick else 2.0,
        quiet_max_seconds=10.0 if quick else 60.0,
        profile_rate=args.profile_rate,
        profile_echo=args.profile_echo,
        profile_dir=args.profile_dir,
    )


async def run_all(
    args: argparse.Namespace, registry: ProcessRegistry, workdir: Path
) -> dict[str, Any]:
    from bench.report import machine_info

    workers = args.workers or os.cpu_count() or 1
    specs = system_specs(workers)
    systems = _selected(args.systems, SYSTEM_ORDER, "systems")
    systems = [s for s in SYSTEM_ORDER if s in systems]  # a fixed order, whatever was typed
    # Now, not after an hour: found, installed or the hint.
    if any(specs[s].kind == "channels" and specs[s].layer in REDIS_LAYERS for s in systems):
        ensure_redis_server(log)
    if any(specs[s].kind == "channels" and specs[s].layer == "nats" for s in systems):
        ensure_nats_server(log)
    if args.max_connections:
        os.environ["BENCH_MAX_CONNECTIONS"] = str(args.max_connections)
    if args.ports_per_source:
        os.environ["BENCH_PORTS_PER_SOURCE"] = str(args.ports_per_source)
    before, soft, hard = raise_open_file_limit()
    log(
        f"open file limit: {soft:,} per process (hard {hard:,}"
        + (f"; raised from {before:,}" if before != soft else "")
        + f"), inherited by the generators and the servers; django-ws MAX_CONNECTIONS "
        f"{max_connections_per_worker():,} per worker"
    )
    # Read by the django-ws settings of the benchmark and by the bare server.
    if args.event_loop:
        os.environ["BENCH_EVENT_LOOP"] = args.event_loop
    if args.eager_tasks:
        os.environ["BENCH_EAGER_TASKS"] = "1"
    scenarios = _scenarios(args)
    options = _options(args)
    code_digest = snapshot_server_code(workdir)
    if args.baseline:
        commit = snapshot_baseline(workdir, args.baseline)
        with_baseline = []
        for key in systems:
            with_baseline.append(key)
            if runs_our_code(specs[key], commit):
                specs[f"{key}@base"] = dataclasses.replace(
                    specs[key], key=f"{key}@base", code=commit
                )
                with_baseline.append(f"{key}@base")
            elif specs[key].layer == "djws":
                log(f"baseline: {commit} has no GRPCChannelLayer; {key} runs without it")
        systems = with_baseline
        log(f"baseline: django-ws at {commit} runs beside the current code")
    data: dict[str, Any] = {
        "server_code_sha256": code_digest,
        "command": _command(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "options": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in options.__dict__.items()
        }
        | {
            "workers": workers,
            "open_file_limit": soft,
            "event_loop": args.event_loop or "default (auto)",
            "eager_tasks": args.eager_tasks,
        },
        "systems": {
            key: {"label": specs[key].label, "workers": specs[key].workers}
            | (
                {"max_connections_per_worker": max_connections_per_worker()}
                if specs[key].kind == "django-ws"
                else {}
            )
            for key in systems
        },
        "scenarios": {s.key: {"scenario": s.describe(), "results": {}} for s in scenarios},
    }
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s.key: {} for s in scenarios}
    for round_index in range(args.repeat):
        if args.repeat > 1:
            log(f"=== round {round_index + 1} of {args.repeat}")
        for key in systems:
            await _run_system(specs[key], scenarios, options, registry, workdir, data, runs)
    for scenario in scenarios:
        for key, results in runs[scenario.key].items():
            data["scenarios"][scenario.key]["results"][key] = _median_run(scenario.kind, results)
    if not args.no_broker and not args.connections:
        from bench.broker_micro import run_broker_micro

        log("== broker micro-benchmark")
        publishes = args.broker_publishes or (10_000 if args.quick else 50_000)
        data["broker"] = await run_broker_micro(
            registry, workdir, publishes=publishes, rounds=2 if args.quick else 5, log=log
        )
    data["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    data["load_average_at_end"] = list(os.getloadavg())
    return data


async def _run_system(
    spec: SystemSpec,
    scenarios: list[Scenario],
    options: RunOptions,
    registry: ProcessRegistry,
    workdir: Path,
    data: dict[str, Any],
    runs: dict[str, dict[str, list[dict[str, Any]]]],
) -> None:
    """Start one system, run its scenarios against it, stop it (whatever happens)."""
    key = spec.key
    one_worker = key.partition("@")[0] in FAN_OUT_EFFICIENCY_SYSTEMS
    wanted = [s for s in scenarios if not one_worker or s.key in FAN_OUT_EFFICIENCY_SCENARIOS]
    if not wanted:
        return
    log(f"== {spec.label}")
    started = time.monotonic()
    system = start_system(spec, registry, workdir)
    log(f"   serving on {system.url} after {time.monotonic() - started:.1f}s")
    data["systems"][key].setdefault("pids", []).extend(system.worker_pids())
    try:
        for index, scenario in enumerate(wanted):
            if scenario.kind in ("idle", "many_idle") and index > 0:
                # Memory is measured on a server that has served nothing else: what
                # earlier scenarios left in the allocator would hide the growth.
                stop_system(system, registry)
                system = start_system(spec, registry, workdir)
                data["systems"][key]["pids"].extend(system.worker_pids())
            log(f"  {scenario.key} {scenario.title}")
            runner = ScenarioRunner(system, options, log)
            try:
                result = await runner.run(scenario)
            except (RuntimeError, TimeoutError) as exc:
                log(f"    error: {exc}")
                result = {"error": str(exc)[:500]}
            runs[scenario.key].setdefault(key, []).append(result)
            for process in system.processes:
                if not process.alive():
                    raise RuntimeError(
                        f"{process.name} died during {scenario.key}:\n{process.log()}"
                    )
    finally:
        stop_system(system, registry)


_HEADLINE = {
    "fanout": "max_deliveries_per_s",
    "echo": "round_trips_per_s",
    "idle": "rss_per_connection_bytes",
    "many_idle": "rss_per_connection_bytes",
    "storm": "handshakes_per_server_core_second",
}


def _median_run(kind: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """With --repeat, the run whose headline figure is the median, with every run's
    figure beside it; a single run as it is."""
    if len(results) == 1:
        return results[0]
    metric = _HEADLINE[kind]
    good = [r for r in results if "error" not in r]
    if not good:
        return results[0]
    ordered = sorted(good, key=lambda r: r[metric])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["repeats"] = [r.get(metric) for r in results]
    return chosen


def _print_and_save(data: dict[str, Any], output: Path, plot_dir: Path | None) -> None:
    from bench.report import plot, table_lines

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data, indent=1) + "\n")
    print()
    print("\n".join(table_lines(data)))
    print(f"results: {output}")
    try:
        written = plot(data, plot_dir or output.with_suffix(""))
    except ImportError as exc:
        print(f"no plots: {exc}")
        return
    for path in written:
        print(f"plot: {path}")


def _command() -> str:
    """This run's command line, as a shell would take it again: what a result file
    records so that its figures can be reproduced."""
    return "python -m bench " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])


def _save_micro(key: str, result: dict[str, Any], output: Path) -> None:
    """Save a micro-benchmark's result under ``key`` with the command and the machine."""
    from bench.report import machine_info

    output.parent.mkdir(parents=True, exist_ok=True)
    data = {"command": _command(), "machine": machine_info(), key: result}
    output.write_text(json.dumps(data, indent=2))
    print(f"results: {output}")


def _install_signal_handlers() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt wherever the run is, so the ``finally``
    that stops every process runs. Installed before ``asyncio.run``, this also keeps
    asyncio from turning SIGINT into a task cancellation, which a ``wait_for`` finishing
    at the same moment can swallow."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        data = json.loads(args.results.read_text())
        from bench.report import plot, table_lines

        print("\n".join(table_lines(data)))
        if args.plot_dir:
            for path in plot(data, args.plot_dir):
                print(f"plot: {path}")
        return

    _install_signal_handlers()
    registry = ProcessRegistry()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="django-ws-bench-"))
    finished = False
    try:
        if args.command == "presence":
            from bench.presence_micro import run_presence_micro

            snapshot_server_code(workdir)
            result = asyncio.run(
                run_presence_micro(
                    registry,
                    workdir,
                    churn=args.churn,
                    members=args.members,
                    publishes=args.publishes,
                    rounds=args.rounds,
                    log=log,
                )
            )
            _save_micro("presence", result, args.output or RESULTS_DIR / f"presence-{stamp}.json")
        elif args.command == "stream":
            from bench.stream_micro import run_stream_micro

            snapshot_server_code(workdir)
            sides = {"django-ws": ""}
            if args.baseline:
                commit = snapshot_baseline(workdir, args.baseline)
                sides[f"django-ws @{commit}"] = commit
            result = run_stream_micro(
                sides, rate=args.rate, seconds=args.seconds, rounds=args.rounds, log=log
            )
            for label, side in result.items():
                log(
                    f"{label}: {side['min_us_per_message']} us of CPU per message at least, "
                    f"{side['median_us_per_message']} median, {side['lost']} lost"
                )
            _save_micro("stream", result, args.output or RESULTS_DIR / f"stream-{stamp}.json")
        elif args.command == "broker":
            from bench.broker_micro import run_broker_micro
            from bench.report import machine_info

            snapshot_server_code(workdir)
            result = asyncio.run(
                run_broker_micro(
                    registry,
                    workdir,
                    publishes=args.publishes,
                    rounds=args.rounds,
                    edges=args.edges,
                    batch=args.batch,
                    log=log,
                )
            )
            data = {
                "command": _command(),
                "machine": machine_info(),
                "scenarios": {},
                "broker": result,
            }
            _print_and_save(data, args.output or RESULTS_DIR / f"broker-{stamp}.json", None)
        else:
            ensure_node_modules()
            data = asyncio.run(run_all(args, registry, workdir))
            _print_and_save(data, args.output or RESULTS_DIR / f"{stamp}.json", args.plot_dir)
        finished = True
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process the benchmark started", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        registry.stop_all()
        kill_generators()
        if finished and not getattr(args, "keep_logs", False):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"server logs: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
