"""Live servers for tests: real processes, real sockets.

:class:`LiveServer` starts a ``websockets_server`` (workers and an embedded broker) on
free ports as a context manager; the pytest fixture ``live_websockets_server`` wraps it.
:class:`ChannelsLiveServerTestCase` serves a project's pages and websockets on one
address for browser tests, as Channels' test case of that name does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.core.exceptions import ImproperlyConfigured
from django.core.servers.basehttp import ThreadedWSGIServer
from django.db import connections
from django.test.testcases import LiveServerThread, _StaticFilesHandler
from django.utils.functional import classproperty

from django_ws_client.apps import TEST_SERVER_ENV
from django_ws_client.devserver import QuietUpgradeRoutingRequestHandler, dev_server_class
from django_ws_client.transport import publish_to_live_server


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
        bind: str | None = None,
    ) -> None:
        self.workers = workers
        self.bind = bind
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
        socket_path = Path(tempfile.gettempdir()) / f"django-ws-test-{self.health_port}.sock"
        self.broker_address = f"unix:{socket_path}"
        env = {**os.environ, "DJANGO_WS_BROKERS": self.broker_address, **self.env}
        manage = self.manage_py if self.manage_py.exists() else None
        if manage is None:
            # Under pytest there may be no manage.py: the same settings and import path.
            from django.conf import settings

            env.setdefault("DJANGO_SETTINGS_MODULE", settings.SETTINGS_MODULE)
            env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        args = ([sys.executable, str(manage)] if manage else [sys.executable, "-m", "django"]) + [
            "websockets_server",
            "-b",
            self.bind or f"127.0.0.1:{self.port}",
            "-w",
            str(self.workers),
            "--health",
            f"127.0.0.1:{self.health_port}",
            "--grace",
            "5",
            "--exit-with-parent",
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


class ChannelsLiveServerTestCase(StaticLiveServerTestCase):
    """Channels' ``ChannelsLiveServerTestCase``: pages and websockets at ``live_server_url``.

    Pages are served by Django's live server thread in the test process (so they see the
    test database, and static files are served as ``StaticLiveServerTestCase`` serves
    them; ``serve_static = False`` serves only ``STATIC_ROOT``). Websocket upgrades on
    the same address are spliced to a real ``websockets_server`` with a private embedded
    broker, started for the class; its processes use the test databases, which must
    therefore be files (as Channels requires: set ``DATABASES[...]["TEST"]["NAME"]``).
    Views publishing with ``get_channel_layer()`` reach that server while it runs.
    """

    host = "localhost"
    serve_static = True
    websocket_workers = 1

    @classproperty
    def live_server_ws_url(cls) -> str:
        return str(cls.live_server_url).replace("http://", "ws://", 1)

    @classmethod
    def setUpClass(cls) -> None:
        for connection in connections.all():
            if connection.vendor == "sqlite" and connection.is_in_memory_db():
                raise ImproperlyConfigured(
                    "ChannelsLiveServerTestCase can not be used with in memory databases: "
                    f"its websocket server is another process; set DATABASES[{connection.alias!r}]"
                    "['TEST']['NAME'] to a file"
                )
        cls._edge_dir = tempfile.mkdtemp(prefix="django-ws-live-")
        edge_socket = str(Path(cls._edge_dir) / "edge.sock")
        test_server = {
            "databases": {c.alias: str(c.settings_dict["NAME"]) for c in connections.all()},
            "allowed_hosts": [cls.host],
        }
        cls._edge = LiveServer(
            workers=cls.websocket_workers,
            bind=f"unix:{edge_socket}",
            env={TEST_SERVER_ENV: json.dumps(test_server)},
        )
        cls._edge.start()
        os.environ["DJANGO_WS_BROKERS"] = cls._edge.broker_address
        publish_to_live_server(True)
        cls.static_handler = StaticFilesHandler if cls.serve_static else _StaticFilesHandler
        cls.server_thread_class = type(
            "DjangoWsLiveServerThread",
            (LiveServerThread,),
            {
                "server_class": dev_server_class(
                    edge_socket, ThreadedWSGIServer, QuietUpgradeRoutingRequestHandler
                )
            },
        )
        try:
            super().setUpClass()
        except BaseException:
            cls._stop_edge()
            raise

    @classmethod
    def _stop_edge(cls) -> None:
        publish_to_live_server(False)
        os.environ.pop("DJANGO_WS_BROKERS", None)
        cls._edge.stop()
        shutil.rmtree(cls._edge_dir, ignore_errors=True)

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()
        finally:
            cls._stop_edge()
