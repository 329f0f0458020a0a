"""Finding the brokers at start-up, and starting the embedded one when there is none.

One machine needs no separate broker: when the transport names a single ``unix:``
address (the default) and nothing answers there, the supervisor starts
``django-ws-broker`` on it as a child process, through the broker's own entry point, and
stops it on exit. The socket must be this user's: its private directory and the socket
itself are checked before anything connects
(:mod:`~django_ws_client.transport.private_socket`). A TCP broker that does not answer
is a start-up error naming the setting: starting one silently elsewhere would split the
cluster.

The embedded broker ends with the supervisor, even a killed one (it runs under
:mod:`.lifeline`). Its socket has an owner file beside it naming the supervisor: a socket
whose owner is dead is stale and is removed at the next start, never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from django_ws_client.transport.channels import channel_credentials, channel_options
from django_ws_client.transport.config import TransportConfig
from django_ws_client.transport.private_socket import check_broker_socket
from django_ws_proto.event_loop import DEFAULT_EVENT_LOOP
from django_ws_proto.grpc_channels import open_aio_channel

logger = logging.getLogger("django_ws.edge")


class BrokerNotFound(RuntimeError):
    """A configured broker does not answer (and cannot be started here)."""


async def broker_serving(address: str, config: TransportConfig, timeout: float = 1.0) -> bool:
    """Whether a broker answers SERVING on the gRPC health service at ``address``."""
    channel = open_aio_channel(address, channel_credentials(config), channel_options(config))
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False
    finally:
        await channel.close()


# CONFIG's settings for the embedded broker: (its CONFIG key, the broker's flag, the
# field of BrokerOptions), for the broker process and for the broker in a worker.
_EMBEDDED_BROKER_SETTINGS = (
    ("presence_grace_seconds", "--presence-grace-seconds", "presence_grace"),
    ("max_group_members", "--max-group-members", "max_group_members"),
    ("history_size", "--history-size", "history_size"),
    ("history_seconds", "--history-seconds", "history_seconds"),
    ("history_bytes", "--history-bytes", "history_bytes"),
)


def embedded_broker_settings(config: TransportConfig) -> list[tuple[str, str, float]]:
    """The broker settings CONFIG sets for the embedded broker, as (flag, options field,
    value); an unset one is left out, keeping the broker's default."""
    chosen = []
    for key, flag, field in _EMBEDDED_BROKER_SETTINGS:
        value = getattr(config, key)
        if value is not None:
            chosen.append((flag, field, value))
    return chosen


def embedded_broker_flags(config: TransportConfig) -> list[str]:
    """The broker settings CONFIG sets for the embedded broker, as its flags."""
    return [
        part
        for flag, _field, value in embedded_broker_settings(config)
        for part in (flag, str(value))
    ]


class EmbeddedBroker:
    """A broker child process on a unix socket, owned by this server."""

    def __init__(
        self, address: str, lifeline_fd: int | None = None, event_loop: str = DEFAULT_EVENT_LOOP
    ) -> None:
        self.address = address
        self.lifeline_fd = lifeline_fd
        self.event_loop = event_loop  # the edge's choice: the broker runs on the same loop
        self.unix_path = (
            Path(address[len("unix:") :].removeprefix("//"))
            if address.startswith("unix:")
            else None
        )
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, config: TransportConfig, timeout: float = 15.0) -> None:
        # Run under the lifeline: the broker ends when this process does, however.
        launcher = (
            ["-m", "django_ws_edge.lifeline", str(self.lifeline_fd), str(os.getpid())]
            if self.lifeline_fd is not None
            else ["-m"]
        )
        # Popen returns as soon as the child is forked; the wait below is async.
        self.process = subprocess.Popen(  # noqa: ASYNC220
            [
                sys.executable,
                *launcher,
                "django_ws_broker",
                "--listen",
                self.address,
                "--ordinal",
                "0",
                "--shards",
                "1",
                "--event-loop",
                self.event_loop,
                *embedded_broker_flags(config),
            ],
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops it in order
            pass_fds=() if self.lifeline_fd is None else (self.lifeline_fd,),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerNotFound(
                    f"the embedded broker on {self.address} exited with code "
                    f"{self.process.returncode}"
                )
            if self.unix_path is not None:
                check_broker_socket(self.unix_path)  # still ours once bound
            if await broker_serving(self.address, config, timeout=0.5):
                logger.info(
                    "embedded broker (pid %d) serving on %s", self.process.pid, self.address
                )
                _write_owner(self.address, self.process.pid)
                return
            await asyncio.sleep(0.05)
        self.stop()
        raise BrokerNotFound(
            f"the embedded broker on {self.address} did not become ready in {timeout:.0f}s"
        )

    def stop(self, timeout: float = 5.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        _remove_owner(self.address)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


def _owner_path(address: str) -> str:
    return address.removeprefix("unix:").removeprefix("//") + ".owner"


def _write_owner(address: str, broker_pid: int) -> None:
    """Record which supervisor owns the embedded broker's socket."""
    path = _owner_path(address)
    with contextlib.suppress(OSError):
        with open(f"{path}.tmp", "w") as owner:
            json.dump({"supervisor": os.getpid(), "broker": broker_pid}, owner)
        os.replace(f"{path}.tmp", path)


def _remove_owner(address: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(_owner_path(address))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, as another user
    return True


def remove_stale_socket(address: str) -> None:
    """Remove the socket of an embedded broker whose supervisor died: its broker ends by
    its lifeline, but may still answer for a moment, or be stopped. The broker started
    next binds a fresh socket; the dead server's is never used. (A socket file nothing
    answers on and no owner names is replaced by the broker itself when it binds.)"""
    path = address.removeprefix("unix:").removeprefix("//")
    try:
        with open(_owner_path(address)) as owner:
            supervisor = int(json.load(owner)["supervisor"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if _pid_alive(supervisor) and supervisor != os.getpid():
        return  # another server of this project runs it: shared as before
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        logger.warning(
            "removed the stale embedded broker socket %s left by a server that died (pid %d)",
            path,
            supervisor,
        )
    _remove_owner(address)


async def claim_embedded_socket(config: TransportConfig) -> bool:
    """Make the embedded broker's unix socket ready for a broker of this server: True
    when one must be started there, False when a broker already serves on it (another
    server of this project started it: shared, as before)."""
    assert config.unix_path is not None
    address = config.brokers[0]
    # Before anything is read, removed or connected to: a socket or directory of
    # another user is refused.
    check_broker_socket(config.unix_path, create=True)
    remove_stale_socket(address)
    if await broker_serving(address, config):
        logger.info("using the broker already serving on %s", address)
        return False
    return True


def claim_for_worker(address: str) -> None:
    """Name this supervisor as the owner of the socket its worker's broker binds, so a
    socket left by a server that died is known to be stale at the next start."""
    _write_owner(address, 0)


def release_for_worker(address: str) -> None:
    _remove_owner(address)


async def ensure_brokers(
    config: TransportConfig,
    setting: str,
    allow_embedded: bool,
    lifeline_fd: int | None = None,
    event_loop: str = DEFAULT_EVENT_LOOP,
) -> EmbeddedBroker | None:
    """Check every broker answers; start the embedded one where that is the design, on
    the event loop the edge's workers use (``WEBSOCKET_SERVER['EVENT_LOOP']``)."""
    if config.unix_path is not None and allow_embedded:
        if not await claim_embedded_socket(config):
            return None
        broker = EmbeddedBroker(config.brokers[0], lifeline_fd, event_loop)
        await broker.start(config)
        return broker
    deadline = time.monotonic() + config.connect_timeout
    missing = list(range(config.shards))
    logger.info(
        "waiting up to %.0fs for %d broker(s) to answer", config.connect_timeout, config.shards
    )
    while missing:
        missing = [k for k in missing if not await broker_serving(config.address_for(k), config)]
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if missing:
        addresses = ", ".join(f"{k}: {config.address_for(k)}" for k in missing)
        raise BrokerNotFound(
            f"{setting}: no broker answers at {addresses} (waited {config.connect_timeout:.0f}s). "
            "Start the brokers, fix the address, or remove the setting to use an embedded broker."
        )
    return None
