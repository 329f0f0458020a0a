"""Sampling profiles of the servers while a step runs, with py-spy.

``python -m bench run --profile-rate R`` records every Python process of the server
(workers, broker, uvicorn workers) during each fan-out step offered at ``R``
deliveries/s, as collapsed stacks (``*.txt``, loadable in speedscope or flamegraph.pl),
and writes a short summary of where each process spent its time (``*-summary.md``).
py-spy (``pip install py-spy``) needs permission to read other processes' memory: root,
or ``CAP_SYS_PTRACE`` in a container.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path

import psutil

PROCESS_KINDS = {
    "django_ws_edge.worker": "edge-worker",
    "django_ws_broker": "broker",
    "websockets_server": "edge-supervisor",
    # uvicorn --workers N spawns its workers through multiprocessing.
    "multiprocessing.spawn": "uvicorn-worker",
    "resource_tracker": "uvicorn-supervisor",
    "uvicorn": "uvicorn-supervisor",
    "bare_ws.py": "bare",
}

# Frames that tell nothing about the work: the interpreter's and asyncio's plumbing.
_PLUMBING = ("<frozen runpy>", "asyncio/runners.py", "asyncio/base_events.py:6", "<module>")


def py_spy_path() -> str:
    path = shutil.which("py-spy")
    if path is None:
        raise RuntimeError("--profile-rate needs py-spy: pip install py-spy")
    return path


def _kind(process: psutil.Process) -> str | None:
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return None
    if "python" not in cmdline:
        return None
    for marker, kind in PROCESS_KINDS.items():
        if marker in cmdline:
            return kind
    return None


async def record(
    processes: list[psutil.Process], seconds: float, directory: Path, tag: str
) -> list[Path]:
    """Record each Python server process for ``seconds`` into ``directory`` (which
    exists); returns the summaries."""
    py_spy = py_spy_path()
    jobs = []
    for process in processes:
        kind = _kind(process)
        if kind is None or kind.endswith("-supervisor"):
            continue
        output = directory / f"{tag}-{kind}-{process.pid}.txt"
        job = await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "--pid",
            str(process.pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(output),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        jobs.append((job, output, kind, process.pid))
    summaries = []
    for job, output, kind, pid in jobs:
        await job.wait()
        if output.exists():
            summary = output.with_name(output.stem + "-summary.md")
            summary.write_text(summarize(output, f"{tag} {kind} (pid {pid})"))
            summaries.append(summary)
    return summaries


def summarize(raw: Path, title: str, top: int = 15) -> str:
    """Self and inclusive time per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            if not any(marker in frame for marker in _PLUMBING):
                inclusive[frame] += count
    lines = [f"# {title}", "", f"{total} samples at 200 Hz (busy samples only).", ""]
    if not total:
        return "\n".join(lines)
    lines += ["## self time", ""]
    lines += [f"- {n / total:5.1%} {frame}" for frame, n in own.most_common(top)]
    lines += ["", "## inclusive time", ""]
    lines += [f"- {n / total:5.1%} {frame}" for frame, n in inclusive.most_common(top * 2)]
    return "\n".join(lines) + "\n"
