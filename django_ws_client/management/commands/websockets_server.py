"""``manage.py websockets_server``: the edge's entry point where Django finds commands.

Kept thin on purpose: it parses options and hands them to the edge's supervisor.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Serve websockets with django-ws: N worker processes on one address, with an "
        "embedded broker when none is configured."
    )
    requires_system_checks = "__all__"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-b",
            "--bind",
            default="127.0.0.1:8000",
            help="HOST:PORT or unix:PATH to serve websockets on (default 127.0.0.1:8000)",
        )
        parser.add_argument(
            "-w",
            "--workers",
            type=int,
            default=os.cpu_count() or 1,
            help="worker processes (default: one per core)",
        )
        parser.add_argument(
            "--health",
            default=None,
            metavar="HOST:PORT",
            help="serve /healthz, /readyz and /metrics on this address",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=None,
            help="seconds to drain after SIGTERM "
            "(default 25, or WEBSOCKET_SERVER['GRACE_SECONDS'])",
        )
        parser.add_argument(
            "--heartbeat-timeout",
            type=float,
            default=None,
            metavar="SECONDS",
            help="a worker whose event loop sends no heartbeat for this long makes /readyz "
            "answer 503 (default 5, or WEBSOCKET_SERVER['HEARTBEAT_TIMEOUT'])",
        )
        parser.add_argument(
            "--wedged-timeout",
            type=float,
            default=None,
            metavar="SECONDS",
            help="a worker silent for this long is killed and replaced "
            "(default 10, or WEBSOCKET_SERVER['WEDGED_TIMEOUT'])",
        )
        parser.add_argument("--alias", default="default", help="transport backend alias")
        parser.add_argument(
            "--no-embedded-broker",
            action="store_true",
            help="never start an embedded broker; fail if none answers",
        )
        parser.add_argument(
            "--exit-with-parent",
            action="store_true",
            help="stop when the process that started this server is gone (runserver uses it)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from django_ws_client.conf import server_option
        from django_ws_edge.embedded import BrokerNotFound
        from django_ws_edge.options import (
            DEFAULT_GRACE_SECONDS,
            ServerOptions,
            eager_tasks_setting,
            event_loop_setting,
            supervision_timeouts,
        )
        from django_ws_edge.sockets import parse_bind
        from django_ws_edge.supervisor import run
        from django_ws_edge.worker import configure_logging

        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        for name in ("bind", "health"):
            if options[name]:
                try:
                    parse_bind(options[name])
                except ValueError as exc:
                    raise CommandError(f"--{name}: {exc}") from None
        try:
            heartbeat, wedged = supervision_timeouts(
                options["heartbeat_timeout"], options["wedged_timeout"]
            )
            # Checked here, before anything starts: "uvloop" where it is not installed
            # is an error naming the setting, not a worker dying at start, again and again.
            event_loop = event_loop_setting()
            eager_tasks_setting()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        grace = options["grace"]
        if grace is None:
            grace = float(server_option("GRACE_SECONDS", DEFAULT_GRACE_SECONDS))
        configure_logging()
        try:
            code = run(
                ServerOptions(
                    bind=options["bind"],
                    workers=options["workers"],
                    health_bind=options["health"] or server_option("HEALTH_BIND", None),
                    alias=options["alias"],
                    grace_seconds=grace,
                    embedded_broker=not options["no_embedded_broker"],
                    heartbeat_timeout=heartbeat,
                    wedged_timeout=wedged,
                    exit_with_parent=options["exit_with_parent"],
                    event_loop=event_loop,
                )
            )
        except (BrokerNotFound, OSError) as exc:
            raise CommandError(str(exc)) from None
        if code:
            raise SystemExit(code)
