"""gRPC channels to brokers: one per broker address, shared and fork-safe.

Both the edge (async streams) and plain Django processes (unary publishes) build their
channel options and credentials here, so TLS and keepalive behave the same everywhere.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import grpc

from django_ws_client.transport.config import TransportConfig
from django_ws_client.transport.private_socket import check_broker_socket, socket_directory

GRPC_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def channel_options(config: TransportConfig) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect quickly after a broker restart; the link adds its own jitter.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    if config.tls and config.tls.server_name:
        options.append(("grpc.ssl_target_name_override", config.tls.server_name))
    return options


def channel_credentials(config: TransportConfig) -> grpc.ChannelCredentials | None:
    tls = config.tls
    if tls is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )


class SyncChannelPool:
    """Thread-safe sync gRPC channels, usable from any thread and any event loop.

    A sync channel is not tied to an event loop, so ``async_to_sync`` (which runs each
    call on a fresh loop) still reuses one connection. After a fork (gunicorn's
    pre-fork workers) the child builds its own channels: gRPC's are not fork-safe.
    """

    def __init__(self, config: TransportConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._channels: dict[str, grpc.Channel] = {}

    def get(self, address: str) -> grpc.Channel:
        with self._lock:
            if self._pid != os.getpid():
                # Inherited channels belong to the parent; do not touch or close them.
                self._channels = {}
                self._pid = os.getpid()
            channel = self._channels.get(address)
            if channel is None:
                self._check_private(address)
                credentials = channel_credentials(self.config)
                options = channel_options(self.config)
                if credentials is None:
                    channel = grpc.insecure_channel(address, options=options)
                else:
                    channel = grpc.secure_channel(address, credentials, options=options)
                self._channels[address] = channel
            return channel

    @staticmethod
    def _check_private(address: str) -> None:
        """The embedded broker's default socket must be this user's before we connect
        (an explicitly configured address is the project's own choice)."""
        if not address.startswith("unix:"):
            return
        path = Path(address[len("unix:") :].removeprefix("//"))
        if path.parent == socket_directory():
            check_broker_socket(path)

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                for channel in self._channels.values():
                    channel.close()
            self._channels = {}
