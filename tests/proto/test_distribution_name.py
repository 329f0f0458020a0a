"""The distribution's name is its own: not the ``django-ws`` another PyPI project has,
and the same wherever a user or an image installs it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from django_ws_client import DISTRIBUTION

ROOT = Path(__file__).resolve().parents[2]
TAKEN = "django-ws"  # another project's (Helpers for using WebSockets in Django)


def test_pyproject_readme_docs_dockerfiles_and_chart_use_one_name() -> None:
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"] == DISTRIBUTION
    assert DISTRIBUTION != TAKEN
    installs = {
        path: re.findall(r"pip install (?:[-\w=/]+ )*?([a-z][\w-]*)(?=\s|$)", path.read_text())
        for path in [
            ROOT / "README.md",
            ROOT / "docs" / "migrating-from-channels.md",
            ROOT / "services" / "edge" / "Dockerfile",
            ROOT / "services" / "broker" / "Dockerfile",
        ]
    }
    for path, names in installs.items():
        ours = [n for n in names if n.startswith("django-ws")]
        assert ours and set(ours) == {DISTRIBUTION}, f"{path.name} installs {ours}"
    chart = ROOT / "helm" / DISTRIBUTION / "Chart.yaml"
    assert f"name: {DISTRIBUTION}\n" in chart.read_text()
    print(f"\n{DISTRIBUTION}: pyproject, README, docs, both Dockerfiles and the chart")


def test_no_other_pypi_project_has_the_name() -> None:
    """Asks the package index, as ``pip index versions`` does. Until the first release
    the name is unknown there; a listed version would be another project's."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", DISTRIBUTION],
        capture_output=True, text=True, timeout=120,
    )
    taken = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", TAKEN],
        capture_output=True, text=True, timeout=120,
    )
    if taken.returncode != 0:
        pytest.skip(f"the package index does not answer: {taken.stderr.strip()[-200:]}")
    print(f"\npip index versions {TAKEN}: {taken.stdout.strip().splitlines()[0]}")
    print(f"pip index versions {DISTRIBUTION}: {(result.stdout + result.stderr).strip().splitlines()[-1]}")
    assert result.returncode != 0 and "No matching distribution" in result.stderr, result.stdout
