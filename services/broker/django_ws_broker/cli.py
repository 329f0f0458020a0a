"""``django-ws-broker``: the broker's command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import socket
import sys
from pathlib import Path

from django_ws_broker.auth import RoleSecretFiles
from django_ws_broker.history import (
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_SECONDS,
    DEFAULT_HISTORY_SIZE,
)
from django_ws_broker.membership import (
    DEFAULT_MAX_GROUP_MEMBERS,
    DEFAULT_PRESENCE_GRACE_SECONDS,
)
from django_ws_broker.server import DEFAULT_MAX_MESSAGE_BYTES, BrokerOptions, TLSFiles, serve
from django_ws_broker.servicer import DEFAULT_HELLO_TIMEOUT
from django_ws_broker.shard import (
    DEFAULT_MAX_GROUPS_PER_EDGE,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_SIZE,
)
from django_ws_proto.credentials import SecretFileError
from django_ws_proto.event_loop import (
    DEFAULT_EVENT_LOOP,
    EVENT_LOOPS,
    EventLoopUnavailable,
    LoopChoice,
    resolve_event_loop,
    running_loop_name,
)
from django_ws_proto.event_loop import run as run_on_loop

_ORDINAL_RE = re.compile(r"-(\d+)$")


def ordinal_from_hostname(hostname: str) -> int | None:
    """The StatefulSet ordinal in a pod hostname such as ``django-ws-broker-2``."""
    match = _ORDINAL_RE.search(hostname.split(".")[0])
    return int(match.group(1)) if match else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="django-ws-broker",
        description="Run a django-ws broker: one shard of the cluster's groups.",
    )
    parser.add_argument(
        "--listen",
        default=os.environ.get("DJANGO_WS_BROKER_LISTEN", "127.0.0.1:50051"),
        help="unix:PATH or HOST:PORT to serve gRPC on (default 127.0.0.1:50051: not "
        "reachable from other machines unless you say so)",
    )
    parser.add_argument(
        "--ordinal",
        type=int,
        default=None,
        help="this broker's shard ordinal; default: taken from a StatefulSet hostname "
        "ending in -K, else 0",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=int(os.environ["DJANGO_WS_SHARDS"]) if os.environ.get("DJANGO_WS_SHARDS") else None,
        help="number of brokers in the cluster (required when the ordinal is above 0)",
    )
    parser.add_argument(
        "--topology-epoch",
        type=int,
        default=int(os.environ.get("DJANGO_WS_TOPOLOGY_EPOCH", "0")),
        help="version of the shard count: edges adopt the count with the highest epoch "
        "(raise it whenever --shards changes)",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=DEFAULT_QUEUE_SIZE,
        help=f"deliveries queued per edge stream before drops (default {DEFAULT_QUEUE_SIZE})",
    )
    parser.add_argument(
        "--queue-bytes",
        type=int,
        default=DEFAULT_QUEUE_BYTES,
        help="bytes of deliveries queued per edge stream before drops "
        f"(default {DEFAULT_QUEUE_BYTES})",
    )
    parser.add_argument(
        "--max-groups-per-edge",
        type=int,
        default=DEFAULT_MAX_GROUPS_PER_EDGE,
        help=f"groups one edge stream may subscribe to (default {DEFAULT_MAX_GROUPS_PER_EDGE})",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help=f"largest gRPC message received or sent (default {DEFAULT_MAX_MESSAGE_BYTES})",
    )
    parser.add_argument(
        "--hello-timeout",
        type=float,
        default=DEFAULT_HELLO_TIMEOUT,
        help="seconds an Attach stream may take to send its hello "
        f"(default {DEFAULT_HELLO_TIMEOUT:g})",
    )
    parser.add_argument(
        "--metrics",
        default=os.environ.get("DJANGO_WS_BROKER_METRICS"),
        metavar="HOST:PORT",
        help="serve Prometheus /metrics on this address",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help="after SIGTERM, report NOT_SERVING for this long before stopping",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=10.0,
        help="time given to open streams to finish when stopping",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ["DJANGO_WS_BROKER_STATE_DIR"])
        if os.environ.get("DJANGO_WS_BROKER_STATE_DIR")
        else None,
        help="save every group's epoch, offsets and history here on a graceful stop and "
        "continue from them at the next start (a rolling upgrade then loses nothing); "
        "without it a restart starts new epochs",
    )
    parser.add_argument(
        "--history-size",
        type=int,
        default=DEFAULT_HISTORY_SIZE,
        help=f"messages kept per group for recovery (default {DEFAULT_HISTORY_SIZE}; 0: none)",
    )
    parser.add_argument(
        "--history-seconds",
        type=float,
        default=DEFAULT_HISTORY_SECONDS,
        help=f"how long a message is kept for recovery (default {DEFAULT_HISTORY_SECONDS:g})",
    )
    parser.add_argument(
        "--history-bytes",
        type=int,
        default=DEFAULT_HISTORY_BYTES,
        help=f"bytes of history the broker keeps in all (default {DEFAULT_HISTORY_BYTES})",
    )
    parser.add_argument(
        "--max-group-members",
        type=int,
        default=DEFAULT_MAX_GROUP_MEMBERS,
        help="members one group may have, over all edges; past it joins are refused "
        f"(default {DEFAULT_MAX_GROUP_MEMBERS})",
    )
    parser.add_argument(
        "--presence-grace-seconds",
        type=float,
        default=DEFAULT_PRESENCE_GRACE_SECONDS,
        help="how long a user's last connection may be gone before its presence.leave "
        f"event, so a quick reconnect makes none (default {DEFAULT_PRESENCE_GRACE_SECONDS:g})",
    )
    parser.add_argument("--tls-cert", type=Path, help="server certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        help="require client certificates signed by this CA (mutual TLS)",
    )
    for role, who in (
        ("edge", "edge workers' Attach streams"),
        ("publisher", "Publish calls from plain Django processes"),
        ("admin", "Stats and Reshard"),
    ):
        variable = f"DJANGO_WS_{role.upper()}_SECRETS"
        parser.add_argument(
            f"--{role}-secrets",
            type=Path,
            default=os.environ.get(variable) or None,
            metavar="FILE",
            help=f"file of the secrets accepted for {who}, one a line (default: ${variable}); "
            "give all three role files or none (none: roles are not checked)",
        )
    parser.add_argument(
        "--event-loop",
        default=os.environ.get("DJANGO_WS_EVENT_LOOP", DEFAULT_EVENT_LOOP),
        metavar="{" + ",".join(EVENT_LOOPS) + "}",
        help="the event loop: auto (uvloop when installed, else asyncio), asyncio or "
        "uvloop (default: auto, or $DJANGO_WS_EVENT_LOOP)",
    )
    parser.add_argument("--log-level", default=os.environ.get("DJANGO_WS_LOG_LEVEL", "INFO"))
    return parser


def options_from_args(args: argparse.Namespace) -> BrokerOptions:
    parser_error = build_parser().error
    ordinal = args.ordinal
    if ordinal is None:
        ordinal = ordinal_from_hostname(os.environ.get("HOSTNAME") or socket.gethostname()) or 0
    shards = args.shards
    if shards is None:
        if ordinal > 0:
            parser_error(f"broker ordinal is {ordinal}: --shards N is required to join a cluster")
        shards = 1
    if not 0 <= ordinal < shards:
        parser_error(f"--ordinal {ordinal} must be below --shards {shards}")
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            parser_error("--tls-cert and --tls-key go together")
        tls = TLSFiles(cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca)
    elif args.tls_client_ca:
        parser_error("--tls-client-ca needs --tls-cert and --tls-key")
    role_secrets = None
    given = {role: getattr(args, f"{role}_secrets") for role in ("edge", "publisher", "admin")}
    if any(given.values()):
        missing = [f"--{role}-secrets" for role, path in given.items() if not path]
        if missing:
            parser_error(
                f"{', '.join(missing)} missing: with role secrets on, every role needs its "
                "own file (or the roles without one could not call anything)"
            )
        role_secrets = RoleSecretFiles(
            edge=given["edge"], publisher=given["publisher"], admin=given["admin"]
        )
    return BrokerOptions(
        listen=args.listen,
        ordinal=ordinal,
        shards=shards,
        queue_size=args.queue_size,
        queue_bytes=args.queue_bytes,
        max_groups_per_edge=args.max_groups_per_edge,
        max_message_bytes=args.max_message_bytes,
        hello_timeout=args.hello_timeout,
        topology_epoch=args.topology_epoch,
        metrics_address=args.metrics,
        drain_seconds=args.drain_seconds,
        grace_seconds=args.grace_seconds,
        tls=tls,
        state_dir=args.state_dir,
        history_size=args.history_size,
        history_seconds=args.history_seconds,
        history_bytes=args.history_bytes,
        max_group_members=args.max_group_members,
        presence_grace=args.presence_grace_seconds,
        role_secrets=role_secrets,
    )


async def _serve(options: BrokerOptions, loop: LoopChoice, asked: str) -> None:
    # Said from inside the loop, by its class: the line proves which loop runs.
    logging.getLogger("django_ws.broker").info(
        "broker (pid %d) runs on the %s event loop (%s; --event-loop %s)",
        os.getpid(),
        running_loop_name(),
        loop.describe(),
        asked,
    )
    await serve(options)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
    options = options_from_args(args)
    try:
        loop = resolve_event_loop(args.event_loop, "--event-loop")
    except EventLoopUnavailable as exc:
        sys.exit(f"django-ws-broker: {exc}")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_on_loop(_serve(options, loop, args.event_loop), loop)
    except SecretFileError as exc:
        # A secrets file that cannot be read, or one secret given to two roles.
        sys.exit(f"django-ws-broker: {exc}")


if __name__ == "__main__":
    main()
