"""Metrics never crash the server: client-chosen close codes cannot grow the series, a
full metrics directory degrades metrics instead of killing workers (SIGBUS), a dead
worker's files are folded into the totals and removed, and an unusable metrics
directory is a system check message at start-up."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from support.clients import join
from support.processes import (
    TEST_PROJECT,
    EdgeServer,
    Stack,
    base_env,
    free_port,
    wait_until,
    websockets_server_command,
)

pytestmark = pytest.mark.timeout(180)

CLIENTS = 100


def metric(text: str, prefix: str) -> float:
    """The sum of the samples whose line starts with ``prefix``."""
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


async def close_with_codes(url: str, codes: range) -> None:
    async def one(code: int) -> None:
        async with connect(url) as ws:
            await ws.send("hello")
            await asyncio.wait_for(ws.recv(), 10)
            await ws.close(code=code)

    for start in range(0, len(codes), 10):
        await asyncio.gather(*(one(code) for code in codes[start : start + 10]))


async def echo_works(server: EdgeServer) -> bool:
    async with connect(f"{server.ws_url}/ws/echo/") as ws:
        await ws.send("still there?")
        return json.loads(await asyncio.wait_for(ws.recv(), 10))["echo"] == "still there?"


def edge_on_small_tmpfs(stack: Stack, size: str, full_first: bool) -> EdgeServer:
    """A server (embedded broker, two workers) in a private mount namespace whose /tmp
    is a tmpfs of ``size``, filled to the last block before it starts if
    ``full_first``."""
    port, health_port = free_port(), free_port()
    bind = f"127.0.0.1:{port}"
    fill = "cat /dev/zero > /tmp/filler 2>/dev/null; " if full_first else ""
    script = f'mount -t tmpfs -o size="$0" tmpfs /tmp && {{ {fill}exec "$@"; }}'
    server = EdgeServer(
        args=[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            size,
            *websockets_server_command(bind, 2, health_port),
        ],
        log_path=stack.tmp / "edge.log",
        # Nothing of the test's own /tmp is visible inside: no database or events file.
        env=base_env(
            DJANGO_SETTINGS_MODULE="testproject.settings",
            TEST_DATABASE=":memory:",
            TEST_EVENTS_FILE="",
            TEST_BROKER="",  # the embedded broker, whatever another test left set
            # Python's temp dir skips a full /tmp; the metrics must stay on it.
            PROMETHEUS_MULTIPROC_DIR="/tmp",
        ),
        cwd=TEST_PROJECT,
        bind=bind,
        health_port=health_port,
    )
    server.start()
    stack.processes.append(server)
    server.wait_ready()
    return server


def fill_tmp(server: EdgeServer) -> str:
    """Fill the server's /tmp (in its mount namespace) to the last byte; ``df`` of it."""
    subprocess.run(
        ["nsenter", "-t", str(server.pid), "-m", "--", "sh", "-c", "cat /dev/zero > /tmp/filler"],
        capture_output=True,
    )
    df = subprocess.run(
        ["nsenter", "-t", str(server.pid), "-m", "--", "df", "-k", "/tmp"],
        capture_output=True,
        text=True,
    )
    return df.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("full_first", [False, True], ids=["fills-while-serving", "full-at-start"])
async def test_clients_choosing_close_codes_on_a_full_tmpfs_kill_no_worker(
    stack: Stack, full_first: bool
) -> None:
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("a private tmpfs /tmp needs root, unshare and nsenter")
    server = edge_on_small_tmpfs(stack, "8m", full_first)
    before = sorted(server.worker_pids())
    df = fill_tmp(server)
    print(f"\n/tmp of the server ({'full at start' if full_first else 'filled now'}): {df}")
    assert df.split()[3] == "0", df  # no block available

    await close_with_codes(f"{server.ws_url}/ws/echo/", range(4001, 4001 + CLIENTS))
    answers = await echo_works(server)
    after = sorted(server.worker_pids())
    text = server.metrics()
    closed = [
        line for line in text.splitlines() if line.startswith("django_ws_edge_connections_closed")
    ]
    degraded = metric(text, "django_ws_edge_metrics_degraded_total")
    deaths = [line for line in server.log().splitlines() if "died with" in line]
    print(f"worker pids before {before}, after {after}; still answers: {answers}")
    print(f"closed series: {closed}; degraded values: {degraded:.0f}; worker deaths: {len(deaths)}")
    assert after == before
    assert deaths == []
    assert answers
    # At most one series for the 100 private-range codes, whatever fitted in the files.
    assert all('code="40' not in line or 'code="4000-4999"' in line for line in closed)
    if full_first:
        # No file could be allocated: the workers kept their metrics in memory, said so
        # once each, and the supervisor counts them.
        assert degraded > 0
        assert "metrics: cannot write" in server.log()


async def test_a_dead_workers_metrics_files_are_folded_and_removed(
    stack: Stack, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = stack.edge(workers=2, env={"TMPDIR": str(temp)})
    (metrics_dir,) = temp.glob("django-ws-metrics-*")
    for _ in range(6):
        ws, _hello = await join(f"{server.ws_url}/ws/group/counted/")
        await ws.close(code=4321)
    wait_until(
        lambda: metric(server.metrics(), "django_ws_edge_connections_opened_total") == 6,
        5,
        "six connections in the metrics",
    )
    victim = server.worker_pids()[0]
    files_before = sorted(p.name for p in metrics_dir.iterdir())
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2,
        30,
        "a replacement worker",
    )
    server.wait_ready()
    wait_until(
        lambda: not any(f"_{victim}." in p.name for p in metrics_dir.iterdir()),
        5,
        "the dead worker's files to go",
    )
    files_after = sorted(p.name for p in metrics_dir.iterdir())
    text = server.metrics()
    opened = metric(text, "django_ws_edge_connections_opened_total")
    closed = metric(text, 'django_ws_edge_connections_closed_total{code="4000-4999"}')
    print(f"\nkilled worker {victim}; files before {files_before}")
    print(f"files after {files_after}")
    print(f"connections opened {opened:.0f}, closed with 4321: {closed:.0f} (kept in the totals)")
    assert not any(f"_{victim}." in name for name in files_after)
    assert "counter_retired.db" in files_after
    assert opened == 6 and closed == 6


def test_an_unusable_metrics_directory_is_a_system_check_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = subprocess.run(
        [sys.executable, "manage.py", "websockets_server", "-b", f"127.0.0.1:{free_port()}"],
        cwd=TEST_PROJECT,
        env=base_env(
            DJANGO_SETTINGS_MODULE="testproject.settings", PROMETHEUS_MULTIPROC_DIR=str(not_a_dir)
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stdout + result.stderr
    print(f"\nexit code {result.returncode}:\n{output.strip()}")
    assert result.returncode != 0
    assert "(django_ws.E006)" in output and "HINT:" in output
    assert "Traceback" not in output
