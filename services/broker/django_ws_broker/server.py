"""Running a broker: the grpc.aio server, health service, metrics and shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY, start_http_server

from django_ws_broker.auth import AccessInterceptor, RoleSecretFiles, RoleSecrets
from django_ws_broker.history import (
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_SECONDS,
    DEFAULT_HISTORY_SIZE,
    History,
)
from django_ws_broker.membership import (
    DEFAULT_MAX_GROUP_MEMBERS,
    DEFAULT_PRESENCE_GRACE_SECONDS,
)
from django_ws_broker.metrics import ShardCollector
from django_ws_broker.servicer import DEFAULT_HELLO_TIMEOUT, BrokerServicer
from django_ws_broker.shard import (
    DEFAULT_MAX_GROUPS_PER_EDGE,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_SIZE,
    ShardState,
)
from django_ws_broker.state import StateFile
from django_ws_proto import tracing as wire_tracing
from django_ws_proto.v1 import broker_pb2_grpc

logger = logging.getLogger("django_ws.broker")

SERVICE_NAME = "django_ws.v1.Broker"

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest gRPC message accepted: a batch of publishes, each at most ``max_event_bytes``."""


@dataclass(frozen=True)
class TLSFiles:
    """Server certificate and key, and the CA that client certificates must chain to."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class BrokerOptions:
    """Everything ``django-ws-broker`` can be told; defaults suit one machine."""

    listen: str
    ordinal: int = 0
    shards: int = 1
    queue_size: int = DEFAULT_QUEUE_SIZE
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    max_groups_per_edge: int = DEFAULT_MAX_GROUPS_PER_EDGE
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    hello_timeout: float = DEFAULT_HELLO_TIMEOUT
    metrics_address: str | None = None
    topology_epoch: int = 0
    drain_seconds: float = 0.0
    grace_seconds: float = 10.0
    tls: TLSFiles | None = None
    role_secrets: RoleSecretFiles | None = None  # None: roles are not checked
    tracing: bool | None = None  # None: from the OTEL_* environment variables
    state_dir: Path | None = None
    history_size: int = DEFAULT_HISTORY_SIZE
    history_seconds: float = DEFAULT_HISTORY_SECONDS
    history_bytes: int = DEFAULT_HISTORY_BYTES
    max_group_members: int = DEFAULT_MAX_GROUP_MEMBERS
    presence_grace: float = DEFAULT_PRESENCE_GRACE_SECONDS


PRESENCE_TICK_SECONDS = 0.1
"""How often leaves whose grace period is over are announced."""

PRUNE_SECONDS = 5.0
"""How often expired history and forgotten publishers are cleared away."""


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Explicit channel options: message size and keepalive, so that a dead edge is
    noticed (and its subscriptions dropped) even when its TCP connection hangs."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def _credentials(tls: TLSFiles) -> grpc.ServerCredentials:
    client_ca = tls.client_ca.read_bytes() if tls.client_ca else None
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _prepare_unix_path(address: str) -> None:
    """Remove a stale socket file left by a broker that died; the caller checked that
    nothing answers there (the edge only starts an embedded broker in that case)."""
    if address.startswith("unix:") and not address.startswith("unix-abstract:"):
        path = Path(address[len("unix:") :].removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()


def _split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Broker:
    """One broker process: the shard, its gRPC server and its health status."""

    def __init__(self, options: BrokerOptions) -> None:
        self.options = options
        self.shard = ShardState(
            ordinal=options.ordinal,
            shards=options.shards,
            queue_size=options.queue_size,
            queue_bytes=options.queue_bytes,
            max_delivery_bytes=options.max_message_bytes // 2,
            max_groups_per_edge=options.max_groups_per_edge,
            topology_epoch=options.topology_epoch,
            history=History(
                size=options.history_size,
                seconds=options.history_seconds,
                max_bytes=options.history_bytes,
                max_replay_bytes=options.max_message_bytes // 2,
            ),
            max_group_members=options.max_group_members,
            presence_grace=options.presence_grace,
        )
        self.state_file: StateFile | None = None
        if options.state_dir is not None:
            self.state_file = StateFile(options.state_dir, options.ordinal)
            self.state_file.load_into(self.shard)
        self._prune: asyncio.Task[None] | None = None
        tracing = options.tracing
        if tracing is None:
            tracing = wire_tracing.configure_provider("django-ws-broker")
        self.servicer = BrokerServicer(
            self.shard,
            tracing=tracing,
            hello_timeout=options.hello_timeout,
            max_batch_bytes=options.max_message_bytes // 2,
        )
        self.health = health.aio.HealthServicer()
        secrets = RoleSecrets(options.role_secrets) if options.role_secrets else None
        self.server = grpc.aio.server(
            options=server_options(options.max_message_bytes),
            interceptors=[AccessInterceptor(secrets)],
        )
        broker_pb2_grpc.add_BrokerServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)

    async def start(self) -> None:
        options = self.options
        _prepare_unix_path(options.listen)
        if options.tls:
            self.server.add_secure_port(options.listen, _credentials(options.tls))
        else:
            self.server.add_insecure_port(options.listen)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if options.metrics_address:
            REGISTRY.register(ShardCollector(self.shard))
            host, port = _split_host_port(options.metrics_address)
            start_http_server(port, addr=host)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._prune = asyncio.get_running_loop().create_task(self._prune_forever())
        logger.info(
            "broker %d of %d ready on %s (pid %d, %s)",
            options.ordinal,
            options.shards,
            options.listen,
            os.getpid(),
            "role secrets checked"
            if options.role_secrets
            else "no role secrets: any caller that reaches this address may call anything",
        )

    async def _prune_forever(self) -> None:
        since_prune = 0.0
        while True:
            await asyncio.sleep(PRESENCE_TICK_SECONDS)
            self.shard.membership.tick()
            since_prune += PRESENCE_TICK_SECONDS
            if since_prune >= PRUNE_SECONDS:
                since_prune = 0.0
                self.shard.prune()

    async def drain_and_stop(self) -> None:
        """Stop without losing what was accepted: apply nothing more (edges keep what
        was not acknowledged and re-send it to the next broker), save the groups'
        positions and history, deliver what is queued, then end the streams and stop."""
        started = asyncio.get_running_loop().time()
        await self.health.enter_graceful_shutdown()
        if self.options.drain_seconds:
            # Still serving, while probes and load balancers notice NOT_SERVING.
            await asyncio.sleep(self.options.drain_seconds)
        self.servicer.draining = True
        if self._prune is not None:
            self._prune.cancel()
        if self.state_file is not None:
            self.state_file.save(self.shard)
        budget = self.options.grace_seconds / 2
        flushed = await self.servicer.flush(budget)
        if not flushed:
            logger.warning(
                "broker %d: edge queues not empty after %.1fs; edges will catch up from "
                "the saved history",
                self.options.ordinal,
                budget,
            )
        self.servicer.end_streams()
        elapsed = asyncio.get_running_loop().time() - started
        await self.server.stop(max(0.5, self.options.grace_seconds - elapsed))
        logger.info("broker %d stopped", self.options.ordinal)


async def serve(options: BrokerOptions) -> None:
    """Run a broker until SIGTERM or SIGINT, then drain and stop."""
    broker = Broker(options)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await broker.drain_and_stop()
