"""The edge's options: what ``websockets_server`` is told, with documented defaults.

Limits that a project tunes live in the ``WEBSOCKET_SERVER`` setting (a dict); the
command line sets where and how many. Every limit has a named default here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest websocket message accepted (close code 1009 past it)."""

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds for a client to complete the handshake and for ``connect()`` to decide."""

DEFAULT_GRACE_SECONDS = 25.0
"""Shutdown budget after SIGTERM; keep below the pod's terminationGracePeriodSeconds."""

DEFAULT_MAX_CONNECTIONS = 10_000
"""Connections one worker holds before answering new handshakes with HTTP 503."""


@dataclass(frozen=True)
class WorkerOptions:
    """Options every worker process receives from the supervisor."""

    bind: str
    inherited_fd: int | None = None
    status_fd: int | None = None
    alias: str = "default"
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0
    write_limit: int = 64 * 1024
    compression: bool = False
    grace_seconds: float = DEFAULT_GRACE_SECONDS

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerOptions:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class ServerOptions:
    """What the supervisor needs: the address, how many workers, and probes."""

    bind: str
    workers: int = os.cpu_count() or 1
    health_bind: str | None = None
    alias: str = "default"
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    embedded_broker: bool = True


def worker_options_from_settings(bind: str, alias: str, grace_seconds: float) -> WorkerOptions:
    """Worker limits from ``WEBSOCKET_SERVER``; unknown keys are reported by checks."""
    from django_ws_client.conf import server_option

    return WorkerOptions(
        bind=bind,
        alias=alias,
        max_message_bytes=int(server_option("MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES)),
        handshake_timeout=float(server_option("HANDSHAKE_TIMEOUT", DEFAULT_HANDSHAKE_TIMEOUT)),
        max_connections=int(server_option("MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)),
        ping_interval=server_option("PING_INTERVAL", 20.0),
        ping_timeout=server_option("PING_TIMEOUT", 20.0),
        close_timeout=float(server_option("CLOSE_TIMEOUT", 5.0)),
        write_limit=int(server_option("WRITE_LIMIT", 64 * 1024)),
        compression=bool(server_option("COMPRESSION", False)),
        grace_seconds=grace_seconds,
    )
