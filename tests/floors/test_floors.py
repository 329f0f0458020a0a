"""The version floors in pyproject.toml are true: the lowest release of every runtime
dependency, installed in a fresh venv, serves a real chat through a real broker."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = [pytest.mark.floors, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]

# What the smoke run needs besides the runtime dependencies, at any version.
SMOKE_TOOLS = ["pytest", "pytest-asyncio", "pytest-timeout", "psutil", "packaging"]
SMOKE_TESTS = [
    "tests/edge/test_websockets_internals.py",
    "tests/broker/test_broker_process.py",
    "tests/e2e/test_chat.py",
]


def floors() -> list[str]:
    """``name==floor`` for every runtime dependency with a ``>=`` floor."""
    pins = []
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]:
        match = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([^,;\s]+).*", requirement)
        assert match, f"{requirement!r} has no >= floor"
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


def test_the_lowest_supported_dependencies_serve_a_chat(tmp_path: Path) -> None:
    started = time.monotonic()
    env_dir = tmp_path / "floors"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    pins = floors()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-c", str(constraints), "-e", str(ROOT), *SMOKE_TOOLS],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    installed = subprocess.run(
        [python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    versions = {
        canonicalize_name(name): Version(version)
        for name, _, version in (line.partition("==") for line in installed.splitlines())
        if version and not name.startswith(("#", "-"))
    }
    for pin in pins:
        name, _, floor = pin.partition("==")
        got = versions.get(canonicalize_name(name.split("[")[0]))
        assert got == Version(floor), f"{pin} wanted, {got} installed:\n{installed}"
    smoke = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SMOKE_TESTS],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    print(f"\nfloors: {', '.join(pins)}")
    print(f"smoke on the floors: {smoke.stdout.strip().splitlines()[-1]} "
          f"({time.monotonic() - started:.0f}s with the install)")
    assert smoke.returncode == 0, smoke.stdout[-5000:] + smoke.stderr[-2000:]
    assert sys.version_info >= (3, 11)
