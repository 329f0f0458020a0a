"""The Dockerfiles, read: no Docker daemon here, so check what a build and a pod
depend on (base image, sources, install, user, entrypoint, ports) by parsing them."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "services" / "edge" / "Dockerfile"
BROKER = ROOT / "services" / "broker" / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    ))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip()]


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def exec_form(path: Path, op: str) -> list[str]:
    values = [args for name, args in final_stage(path) if name == op]
    assert values, f"{path.name}: no {op}"
    parsed = json.loads(values[-1])  # shell form would not be JSON: signals go to sh
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
    return parsed


@pytest.mark.parametrize("path", [EDGE, BROKER], ids=["edge", "broker"])
def test_builds_from_python_311_slim_and_the_repository(path: Path) -> None:
    steps = instructions(path)
    bases = [args.split()[0] for op, args in steps if op == "FROM"]
    assert bases and all(b == "python:3.11-slim" for b in bases)
    for op, args in steps:
        if op == "COPY" and "--from" not in args:
            *sources, _ = args.split()
            for source in sources:
                assert list(ROOT.glob(source)) or source.endswith("*"), f"{source} missing"
    copied = {s for op, a in steps if op == "COPY" for s in a.split()[:-1]}
    # Everything the pyproject's package finder looks in.
    assert {"pyproject.toml", "proto", "services", "django_ws_client"} <= copied
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert re.search(r"pip (wheel|install)[^&]* \.(\s|$)", runs), "installs the repository"


@pytest.mark.parametrize("path", [EDGE, BROKER], ids=["edge", "broker"])
def test_runs_as_a_numeric_non_root_user(path: Path) -> None:
    users = [args for op, args in final_stage(path) if op == "USER"]
    assert users
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can verify it"


def test_broker_entrypoint_is_the_installed_console_script() -> None:
    assert exec_form(BROKER, "ENTRYPOINT") == ["django-ws-broker"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "django-ws-broker" in scripts
    from django_ws_broker.cli import build_parser

    build_parser().parse_args(exec_form(BROKER, "CMD"))
    assert {"50051", "9102"} <= set(" ".join(a for op, a in final_stage(BROKER)
                                             if op == "EXPOSE").split())


def test_edge_entrypoint_is_the_websockets_server_command() -> None:
    assert exec_form(EDGE, "ENTRYPOINT") == ["python", "manage.py", "websockets_server"]
    assert ("WORKDIR", "/app") in final_stage(EDGE)
    from django_ws_client.management.commands.websockets_server import Command

    parser = Command().create_parser("manage.py", "websockets_server")
    parser.parse_args(exec_form(EDGE, "CMD"))
    assert {"8000", "8002"} <= set(" ".join(a for op, a in final_stage(EDGE)
                                            if op == "EXPOSE").split())
    assert "FROM django-ws-edge" in EDGE.read_text(), "documents how to build a project on it"
