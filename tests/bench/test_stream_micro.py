"""The in-worker stream micro-benchmark works end to end through its command, against
a baseline commit too, on a short run (not a measurement)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        importlib.util.find_spec("psutil") is None, reason="the bench extra is not installed"
    ),
    pytest.mark.skipif(not (ROOT / ".git").exists(), reason="--baseline needs the git checkout"),
]


def test_every_message_comes_back_through_the_link_on_both_sides(tmp_path: Path) -> None:
    output = tmp_path / "stream.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "stream",
            "--rate",
            "400",
            "--seconds",
            "0.5",
            "--rounds",
            "1",
            "--baseline",
            "HEAD",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stderr
    result = json.loads(output.read_text())["stream"]
    assert len(result) == 2  # this code and HEAD's, each in processes of their own
    for side in result.values():
        (run,) = side["runs"]
        assert run["messages"] == 200
        assert run["delivered"] == 200
        assert side["lost"] == 0
        assert side["min_us_per_message"] > 0
