"""Real processes for tests: brokers and websocket servers on free ports.

Every helper waits for readiness (gRPC health, ``/readyz``) instead of sleeping, and
every process is stopped by its fixture, also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.processes import (
    ManagedProcess,
    free_port,
    grpc_serving,
    none_running,
    process_tree,
    wait_until,
)
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

__all__ = ["free_port", "none_running", "process_tree", "wait_until"]

ROOT = Path(__file__).resolve().parents[2]
TEST_PROJECT = ROOT / "tests" / "project"
EXAMPLE_PROJECT = ROOT / "examples" / "chat"


@dataclass(kw_only=True)
class Process(ManagedProcess):
    """A process a test started: SIGTERM goes to it alone (a supervisor's own shutdown is
    often what the test checks), then whatever of its tree is left is killed."""

    terminate_group: bool = False

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Broker(Process):
    listen: str = ""
    admin_secret: str | None = None  # sent with Stats when the broker checks roles

    def ready(self) -> bool:
        return grpc_serving(self.listen)

    def wait_ready(self, timeout: float = 20.0) -> None:
        def check() -> bool:
            if not self.alive():
                raise RuntimeError(f"broker exited early:\n{self.log()}")
            return self.ready()

        wait_until(check, timeout, f"broker on {self.listen}")

    def stats(self, include_groups: bool = False) -> broker_pb2.StatsReply:
        with grpc.insecure_channel(self.listen) as channel:
            return broker_pb2_grpc.BrokerStub(channel).Stats(
                broker_pb2.StatsRequest(include_groups=include_groups),
                timeout=5,
                metadata=(("authorization", f"Bearer {self.admin_secret}"),)
                if self.admin_secret
                else None,
            )


@dataclass
class EdgeServer(Process):
    bind: str = ""
    health_port: int = 0
    events_file: Path | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.bind}"

    def readyz(self) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/readyz", timeout=1
            ) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            return 0, {}

    def wait_ready(self, timeout: float = 30.0) -> dict[str, object]:
        detail: dict[str, object] = {}

        def check() -> bool:
            nonlocal detail
            if not self.alive():
                raise RuntimeError(f"websockets_server exited early:\n{self.log()}")
            status, detail = self.readyz()
            return status == 200

        try:
            wait_until(check, timeout, f"websockets_server on {self.bind} to be ready")
        except TimeoutError:
            raise TimeoutError(f"not ready: {detail}\n{self.log()}") from None
        return detail

    def worker_pids(self) -> list[int]:
        _, detail = self.readyz()
        return [int(w["pid"]) for w in detail.get("workers", []) if w.get("pid")]  # type: ignore[union-attr]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def events(self) -> list[str]:
        if self.events_file is None or not self.events_file.exists():
            return []
        return self.events_file.read_text().splitlines()


def websockets_server_command(bind: str, workers: int, health_port: int) -> list[str]:
    """``manage.py websockets_server`` on ``bind`` with ``workers`` and a health port."""
    return [
        sys.executable,
        "manage.py",
        "websockets_server",
        "-b",
        bind,
        "-w",
        str(workers),
        "--health",
        f"127.0.0.1:{health_port}",
    ]


def start_edge(
    tmp: Path,
    *,
    workers: int = 2,
    broker: str | None = None,
    brokers: list[str] | None = None,
    project: Path = TEST_PROJECT,
    settings: str = "testproject.settings",
    bind: str | None = None,
    name: str = "edge",
    env: dict[str, str] | None = None,
    wait: bool = True,
    extra_args: tuple[str, ...] = (),
) -> EdgeServer:
    port = free_port()
    health_port = free_port()
    bind = bind or f"127.0.0.1:{port}"
    events = tmp / f"{name}-events.txt"
    extra = {
        "DJANGO_SETTINGS_MODULE": settings,
        "TEST_EVENTS_FILE": str(events),
        "TEST_DATABASE": str(tmp / "db.sqlite3"),
        **(env or {}),
    }
    if broker:
        extra["TEST_BROKER"] = broker
    if brokers:
        extra["TEST_BROKERS"] = ",".join(brokers)
    server = EdgeServer(
        args=[*websockets_server_command(bind, workers, health_port), *extra_args],
        log_path=tmp / f"{name}.log",
        env=base_env(**extra),
        cwd=project,
        bind=bind,
        health_port=health_port,
        events_file=events,
    )
    server.start()
    if wait:
        server.wait_ready()
    return server


@dataclass
class DevServer(Process):
    """``manage.py runserver`` (django-ws's: pages and websockets on one address)."""

    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def wait_serving(self, path: str = "/", timeout: float = 30.0) -> None:
        """Wait until a page answers (any HTTP status: Django is up)."""

        def check() -> bool:
            if not self.alive():
                raise RuntimeError(f"runserver exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}{path}", timeout=1):
                    return True
            except urllib.error.HTTPError:
                return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_until(check, timeout, f"runserver on port {self.port}")

    def stop(self, timeout: float = 15.0) -> None:
        """CONTROL-C, as a developer stops it: the whole process group gets SIGINT."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        super().stop(timeout)


def start_runserver(
    tmp: Path, *, project: Path, env: dict[str, str], extra_args: tuple[str, ...] = ()
) -> DevServer:
    port = free_port()
    server = DevServer(
        args=[sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", *extra_args],
        log_path=tmp / "runserver.log",
        env=base_env(**env),
        cwd=project,
        port=port,
    )
    server.start()
    return server


@dataclass
class Stack:
    """Processes a test started, stopped at teardown in reverse order."""

    tmp: Path
    processes: list[Process] = field(default_factory=list)

    def broker(self, listen: str | None = None, *extra: str, name: str = "broker") -> Broker:
        broker = self.broker_unchecked(listen, *extra, name=name)
        broker.wait_ready()
        return broker

    def broker_unchecked(
        self, listen: str | None = None, *extra: str, name: str = "broker"
    ) -> Broker:
        """Start a broker without waiting for it over plaintext gRPC (TLS brokers)."""
        listen = listen or f"127.0.0.1:{free_port()}"
        broker = Broker(
            args=[sys.executable, "-m", "django_ws_broker", "--listen", listen, *extra],
            log_path=self.tmp / f"{name}.log",
            env=base_env(),
            cwd=self.tmp,
            listen=listen,
        )
        broker.start()
        self.processes.append(broker)
        return broker

    def edge(self, *, wait: bool = True, **kwargs: object) -> EdgeServer:
        server = start_edge(self.tmp, wait=False, **kwargs)  # type: ignore[arg-type]
        self.processes.append(server)  # registered before waiting: stopped even if never ready
        if wait:
            server.wait_ready()
        return server

    def runserver(
        self, *, project: Path, env: dict[str, str], extra_args: tuple[str, ...] = ()
    ) -> DevServer:
        server = start_runserver(self.tmp, project=project, env=env, extra_args=extra_args)
        self.processes.append(server)
        server.wait_serving()
        return server

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
