"""Shared fixtures: real processes on free ports, always stopped at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import Stack


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the long soak tests")
    parser.addoption(
        "--floors",
        action="store_true",
        help="install the lowest supported dependencies in a fresh venv and smoke-test them",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for flag in ("soak", "floors"):
        if config.getoption(f"--{flag}"):
            continue
        skip = pytest.mark.skip(reason=f"{flag} test: run with --{flag}")
        for item in items:
            if flag in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Start brokers and websocket servers; all are stopped when the test ends."""
    started = Stack(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
