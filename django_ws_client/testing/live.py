"""A real ``websockets_server`` for tests: worker processes, embedded broker, sockets.

:class:`LiveServer` starts one on free ports as a context manager; the pytest fixture
``live_websockets_server`` (:mod:`django_ws_client.pytest_plugin`) wraps it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A real ``websockets_server`` (workers + embedded broker) on free ports.

    Use as a context manager; ``url`` is ``ws://127.0.0.1:PORT``. The server runs the
    project's own settings in child processes: a test database must be one they can see
    (a file-based SQLite test database, or PostgreSQL), passed with ``env`` if needed.
    """

    def __init__(
        self,
        *,
        workers: int = 1,
        manage_py: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self.workers = workers
        self.manage_py = Path(manage_py) if manage_py else Path(sys.argv[0]).with_name("manage.py")
        self.env = env or {}
        self.ready_timeout = ready_timeout
        self.port = 0
        self.health_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port, self.health_port = _free_port(), _free_port()
        # A private embedded broker, so a development server of the same project on
        # this machine is never shared (applies when CONFIG names no broker itself).
        socket_path = Path(tempfile.gettempdir()) / f"django-ws-test-{self.port}.sock"
        env = {**os.environ, "DJANGO_WS_BROKERS": f"unix:{socket_path}", **self.env}
        manage = self.manage_py if self.manage_py.exists() else None
        args = ([sys.executable, str(manage)] if manage else [sys.executable, "-m", "django"]) + [
            "websockets_server",
            "-b",
            f"127.0.0.1:{self.port}",
            "-w",
            str(self.workers),
            "--health",
            f"127.0.0.1:{self.health_port}",
            "--grace",
            "5",
        ]
        self.process = subprocess.Popen(args, env=env, start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"websockets_server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/readyz", timeout=1
                ):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"websockets_server was not ready within {self.ready_timeout}s")

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.process = None

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
