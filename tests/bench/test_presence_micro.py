"""The presence micro-benchmark works end to end, on tiny counts (not a measurement)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[2])

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        importlib.util.find_spec("psutil") is None, reason="the bench extra is not installed"
    ),
]


async def test_presence_micro_counts_every_event(tmp_path: Path) -> None:
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from bench.presence_micro import run_presence_micro
    from bench.processes import ProcessRegistry

    registry = ProcessRegistry()
    try:
        result = await run_presence_micro(
            registry, tmp_path, churn=400, members=1_000, publishes=500, rounds=1
        )
    finally:
        registry.stop_all()
    print(result)
    assert result["dropped"] == 0
    assert result["churn"]["member_changes"] == 800
    assert result["churn"]["changes_per_core_second"] > 0
    assert result["send"]["publishes"] == 500
