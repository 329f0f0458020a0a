"""The edge's options: what ``websockets_server`` is told, with documented defaults.

Limits that a project tunes live in the ``WEBSOCKET_SERVER`` setting (a dict); the
command line sets where and how many. Every limit has a named default here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from django_ws_client.connection import DEFAULT_SLOW_CLIENT_BYTES
from django_ws_proto.event_loop import DEFAULT_EVENT_LOOP, resolve_event_loop

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest websocket message accepted (close code 1009 past it)."""

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds for a client to complete the handshake and for ``connect()`` to decide."""

DEFAULT_GRACE_SECONDS = 25.0
"""Shutdown budget after SIGTERM; keep below the pod's terminationGracePeriodSeconds."""

DEFAULT_MAX_CONNECTIONS = 10_000
"""Connections one worker holds before answering new handshakes with HTTP 503."""

DEFAULT_BLOCKED_LOOP_WARNING = 0.5
"""Seconds a handler may hold the event loop before a warning names it."""

DEFAULT_MAX_HEADER_LINE = 8192
"""Longest request line or header line of a handshake (longer: HTTP 414 or 431)."""

DEFAULT_MAX_HEADERS = 128
"""Most headers in a handshake (more: HTTP 431)."""

DEFAULT_MAX_WRITE_BUFFER = 4 * 1024 * 1024
"""Unsent bytes one connection may hold before it is cut off (above any one message)."""

DEFAULT_HEARTBEAT_TIMEOUT = 5.0
"""Seconds without a heartbeat from a worker's event loop before ``/readyz`` says 503."""

DEFAULT_WEDGED_TIMEOUT = 10.0
"""Seconds without a heartbeat before the worker is killed (SIGKILL) and replaced."""

HEARTBEAT_INTERVAL_MAX = 0.5
"""Longest interval between a worker's heartbeats (shorter for short timeouts)."""


DEFAULT_SLOW_CLIENT_SECONDS = 30.0
"""Seconds a send to a client may make no progress before it is closed as too slow."""

DEFAULT_WORKER_BUFFER_BYTES = 512 * 1024 * 1024
"""Bytes of channel layer events waiting in all of one worker's connections; past it,
the connection with the most waiting is closed as too slow."""


DEFAULT_EAGER_TASKS = False
"""Whether workers run new tasks' first step eagerly (Python 3.12+). Off until the
benchmarks say which is better."""

DEFAULT_BROKER_IN_WORKER = False
"""Whether a one-worker server runs the embedded broker inside its worker. Off: the
broker's history then outlives a worker replacement (see django_ws_edge.broker_in_worker)."""

EVENT_LOOP_SETTING = "WEBSOCKET_SERVER['EVENT_LOOP']"
EAGER_TASKS_SETTING = "WEBSOCKET_SERVER['EAGER_TASKS']"
BROKER_IN_WORKER_SETTING = "WEBSOCKET_SERVER['BROKER_IN_WORKER']"


def event_loop_setting() -> str:
    """``WEBSOCKET_SERVER['EVENT_LOOP']``, checked: an unknown value, or "uvloop" where
    uvloop does not import, raises ``ValueError`` naming the setting."""
    from django_ws_client.conf import server_option

    value = server_option("EVENT_LOOP", DEFAULT_EVENT_LOOP)
    resolve_event_loop(value, EVENT_LOOP_SETTING)
    return str(value)


def _bool_setting(key: str, default: bool) -> bool:
    """``WEBSOCKET_SERVER[key]``, checked: anything but a bool raises ``ValueError``
    naming the setting."""
    from django_ws_client.conf import server_option

    value = server_option(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"WEBSOCKET_SERVER['{key}'] must be True or False, not {value!r}")
    return value


def eager_tasks_setting() -> bool:
    """``WEBSOCKET_SERVER['EAGER_TASKS']``, checked."""
    return _bool_setting("EAGER_TASKS", DEFAULT_EAGER_TASKS)


def broker_in_worker_setting() -> bool:
    """``WEBSOCKET_SERVER['BROKER_IN_WORKER']``, checked."""
    return _bool_setting("BROKER_IN_WORKER", DEFAULT_BROKER_IN_WORKER)


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
    rate_limit: float | None = None
    rate_burst: float = 20.0
    blocked_loop_warning: float = DEFAULT_BLOCKED_LOOP_WARNING
    max_header_line: int = DEFAULT_MAX_HEADER_LINE
    max_headers: int = DEFAULT_MAX_HEADERS
    socket_send_buffer: int | None = None
    max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER
    slow_client_bytes: int = DEFAULT_SLOW_CLIENT_BYTES
    slow_client_seconds: float = DEFAULT_SLOW_CLIENT_SECONDS
    worker_buffer_bytes: int = DEFAULT_WORKER_BUFFER_BYTES
    heartbeat_interval: float = HEARTBEAT_INTERVAL_MAX
    lifeline_fd: int | None = None
    event_loop: str = DEFAULT_EVENT_LOOP
    eager_tasks: bool = DEFAULT_EAGER_TASKS
    broker_in_worker: bool = False
    """Host the embedded broker in this worker (the supervisor decides: one worker, the
    embedded unix socket, and nothing serving there yet)."""

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
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    wedged_timeout: float = DEFAULT_WEDGED_TIMEOUT
    exit_with_parent: bool = False
    """Stop when the process that started this one is gone (``runserver``'s edge)."""
    event_loop: str = DEFAULT_EVENT_LOOP
    """The workers' and the embedded broker's event loop: "auto", "asyncio" or "uvloop"."""


def supervision_timeouts(heartbeat: float | None, wedged: float | None) -> tuple[float, float]:
    """The heartbeat and wedged-worker timeouts: the command line's if given, else
    ``WEBSOCKET_SERVER``'s, else the defaults. A bad value raises ``ValueError`` naming
    both places it can come from."""
    from django_ws_client.conf import server_option

    values: list[float] = []
    for given, key, flag, default in (
        (heartbeat, "HEARTBEAT_TIMEOUT", "--heartbeat-timeout", DEFAULT_HEARTBEAT_TIMEOUT),
        (wedged, "WEDGED_TIMEOUT", "--wedged-timeout", DEFAULT_WEDGED_TIMEOUT),
    ):
        where = f"{flag} (or WEBSOCKET_SERVER['{key}'])"
        raw = given if given is not None else server_option(key, default)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be a number of seconds, not {raw!r}") from None
        if not value > 0:
            raise ValueError(f"{where} must be more than 0 seconds, not {raw!r}")
        values.append(value)
    if values[1] < values[0]:
        raise ValueError(
            f"--wedged-timeout (or WEBSOCKET_SERVER['WEDGED_TIMEOUT']) = {values[1]:g}s must "
            f"not be shorter than --heartbeat-timeout (or WEBSOCKET_SERVER['HEARTBEAT_TIMEOUT'])"
            f" = {values[0]:g}s: a worker is reported not ready before it is replaced"
        )
    return values[0], values[1]


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
        rate_limit=server_option("RATE_LIMIT", None),
        rate_burst=float(server_option("RATE_BURST", 20.0)),
        blocked_loop_warning=float(
            server_option("BLOCKED_LOOP_WARNING", DEFAULT_BLOCKED_LOOP_WARNING)
        ),
        max_header_line=int(server_option("MAX_HEADER_LINE", DEFAULT_MAX_HEADER_LINE)),
        max_headers=int(server_option("MAX_HEADERS", DEFAULT_MAX_HEADERS)),
        socket_send_buffer=_optional_int(server_option("SOCKET_SEND_BUFFER", None)),
        max_write_buffer=int(server_option("MAX_WRITE_BUFFER", DEFAULT_MAX_WRITE_BUFFER)),
        slow_client_bytes=int(server_option("SLOW_CLIENT_BYTES", DEFAULT_SLOW_CLIENT_BYTES)),
        slow_client_seconds=float(
            server_option("SLOW_CLIENT_SECONDS", DEFAULT_SLOW_CLIENT_SECONDS)
        ),
        worker_buffer_bytes=int(server_option("WORKER_BUFFER_BYTES", DEFAULT_WORKER_BUFFER_BYTES)),
        event_loop=event_loop_setting(),
        eager_tasks=eager_tasks_setting(),
    )


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
