"""``manage.py runserver`` serving pages and websockets on one address.

Django's own ``runserver`` (``django.contrib.staticfiles``' when installed, so static
files are served as before), plus a ``websockets_server`` with its embedded broker on a
private unix socket, to which the development server hands websocket upgrades (see
:mod:`django_ws_client.devserver`). The websocket server is started inside the
autoreloader's child, so a code change restarts both. ``--no-websockets`` gives back
Django's plain command.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from django.apps import apps
from django.core.management.base import CommandParser

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import (
        Command as RunserverCommand,
    )
else:
    from django.core.management.commands.runserver import (
        Command as RunserverCommand,
    )


class EdgeProcess:
    """The development server's ``websockets_server``, on a private unix socket."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.directory = tempfile.mkdtemp(prefix="django-ws-runserver-")
        self.socket = str(Path(self.directory) / "edge.sock")
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        manage = Path(sys.argv[0])
        start = (
            [sys.executable, str(manage)]
            if manage.name.endswith(".py") and manage.exists()
            else [sys.executable, "-m", "django"]
        )
        return [
            *start,
            "websockets_server",
            "-b",
            f"unix:{self.socket}",
            "-w",
            str(self.workers),
            "--grace",
            "2",
            "--exit-with-parent",
        ]

    def start(self) -> None:
        self.process = subprocess.Popen(self.command())
        atexit.register(self.stop)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class Command(RunserverCommand):
    help = (
        "Start Django's development server with websockets on the same address: "
        "websocket upgrades go to django-ws's websockets_server (with its embedded broker), "
        "everything else to Django."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--no-websockets",
            action="store_false",
            dest="use_websockets",
            help="serve pages only, as Django's runserver does",
        )
        parser.add_argument(
            "--ws-workers",
            type=int,
            default=1,
            help="websocket worker processes (default 1)",
        )

    def inner_run(self, *args: Any, **options: Any) -> None:
        if not options.get("use_websockets", True):
            super().inner_run(*args, **options)
            return
        from django_ws_client.devserver import dev_server_class

        edge = EdgeProcess(max(1, options.get("ws_workers", 1)))
        edge.start()
        self.server_cls = dev_server_class(edge.socket)
        try:
            super().inner_run(*args, **options)
        finally:
            edge.stop()

    def on_bind(self, server_port: int) -> None:
        super().on_bind(server_port)
        if self.server_cls.__name__ == "DjangoWsDevServer":
            self.stdout.write(
                "Websockets are served on the same address by django-ws "
                "(websockets_server with an embedded broker)."
            )
