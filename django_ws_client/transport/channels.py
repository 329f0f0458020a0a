"""gRPC channels to brokers: one per broker address, shared and fork-safe.

Both the edge (async streams) and plain Django processes (unary publishes) build their
channel options and credentials here, so TLS, keepalive and the role secret behave the
same everywhere.

The role secret (CONFIG ``secret_file``) rides in each call's metadata rather than in
gRPC call credentials, which gRPC only sends over TLS: a shared secret must also work on
a plaintext network fenced by a NetworkPolicy. It is read again when its file changes, so
a rotated Kubernetes Secret is picked up without a restart.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from django_ws_client.transport.config import TransportConfig
from django_ws_client.transport.private_socket import check_broker_socket, socket_directory
from django_ws_proto.credentials import EDGE_KEY, SecretFile, bearer
from django_ws_proto.grpc_channels import open_channel, tls_credentials

Metadata = tuple[tuple[str, str], ...]

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
    return tls_credentials(tls.ca, tls.cert, tls.key)


_secret_files: dict[Path, SecretFile] = {}
_secret_files_lock = threading.Lock()


def _secret_file(path: Path) -> SecretFile:
    """One reader per file per process, so its change check is shared by every call."""
    with _secret_files_lock:
        file = _secret_files.get(path)
        if file is None:
            file = _secret_files[path] = SecretFile(path, "the transport CONFIG's 'secret_file'")
        return file


def auth_metadata(config: TransportConfig, *, edge_key: str | None = None) -> Metadata:
    """The metadata that proves who this process is to a broker: the role secret when
    CONFIG names one, and, on an edge's Attach, the key its edge id derives from."""
    metadata: list[tuple[str, str]] = []
    if config.secret_file is not None:
        metadata.append(bearer(_secret_file(config.secret_file).first))
    if edge_key is not None:
        metadata.append((EDGE_KEY, edge_key))
    return tuple(metadata)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    """Call details with metadata added (the form gRPC's interceptor examples use)."""


class _CallMetadata(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the role secret to every unary call of a sync channel."""

    def __init__(self, metadata: Callable[[], Metadata]) -> None:
        self.metadata = metadata

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        extra = self.metadata()
        if extra:
            details = _CallDetails(
                details.method,
                details.timeout,
                (*(details.metadata or ()), *extra),
                details.credentials,
                details.wait_for_ready,
                details.compression,
            )
        return continuation(details, request)


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
                channel = open_channel(
                    address, channel_credentials(self.config), channel_options(self.config)
                )
                if self.config.secret_file is not None:
                    config = self.config
                    channel = grpc.intercept_channel(
                        channel, _CallMetadata(lambda: auth_metadata(config))
                    )
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
