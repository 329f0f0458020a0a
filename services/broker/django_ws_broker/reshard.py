"""``python -m django_ws_broker.reshard``: change the shard count of a running cluster.

Tells every listed broker the new count and a new topology epoch. Each broker drops the
subscriptions of groups it no longer owns and announces the new count to its attached
edges, which move those groups' subscriptions to their new owners. Growing: start the
new brokers first (with the new ``--shards`` and ``--topology-epoch``), then reshard.
Shrinking: reshard, then stop the brokers past the new count.

    python -m django_ws_broker.reshard --shards 4 --epoch 2 \\
        broker-0:50051 broker-1:50051 broker-2:50051 broker-3:50051

Resharding is an admin operation: when the brokers check role secrets, give the admin
secret file with ``--secret-file`` (default: ``$DJANGO_WS_ADMIN_SECRETS``, which a broker
pod already has, so running this inside one needs nothing more).

Brokers that serve TLS are reached over TLS: ``--tls-ca`` (default ``$DJANGO_WS_TLS_CA``,
the variable edges use) verifies them, and ``--tls-cert`` / ``--tls-key`` (default
``$DJANGO_WS_TLS_CERT`` / ``$DJANGO_WS_TLS_KEY``) present a client certificate when they
require mutual TLS. Without a CA the tool speaks plaintext.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import grpc

from django_ws_proto.credentials import SecretFileError, bearer, read_secrets
from django_ws_proto.grpc_channels import Options, open_channel, tls_credentials
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc


def reshard(
    addresses: list[str],
    shards: int,
    epoch: int,
    timeout: float = 5.0,
    admin_secret: str | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    options: Options = (),
) -> list[int]:
    """Reshard each broker in turn; returns how many groups each released. With
    ``credentials`` every broker is reached over TLS."""
    metadata = (bearer(admin_secret),) if admin_secret else None
    released = []
    for address in addresses:
        with open_channel(address, credentials, options) as channel:
            reply = broker_pb2_grpc.BrokerStub(channel).Reshard(
                broker_pb2.ReshardRequest(shards=shards, topology_epoch=epoch),
                timeout=timeout,
                metadata=metadata,
            )
        released.append(reply.released_groups)
    return released


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m django_ws_broker.reshard", description=__doc__)
    parser.add_argument("--shards", type=int, required=True, help="the new number of brokers")
    parser.add_argument(
        "--epoch",
        type=int,
        default=None,
        help="topology epoch, higher than any before (default: the current time)",
    )
    parser.add_argument(
        "--secret-file",
        type=Path,
        default=os.environ.get("DJANGO_WS_ADMIN_SECRETS") or None,
        help="file whose first line is the admin secret (default: $DJANGO_WS_ADMIN_SECRETS)",
    )
    for flag, variable, what in (
        ("--tls-ca", "DJANGO_WS_TLS_CA", "CA that verifies the brokers: reach them over TLS"),
        ("--tls-cert", "DJANGO_WS_TLS_CERT", "client certificate, for mutual TLS"),
        ("--tls-key", "DJANGO_WS_TLS_KEY", "the client certificate's key"),
    ):
        parser.add_argument(
            flag,
            type=Path,
            default=os.environ.get(variable) or None,
            help=f"{what} (default: ${variable})",
        )
    parser.add_argument(
        "--tls-server-name",
        default=None,
        help="name to verify in the brokers' certificates instead of each address's host",
    )
    parser.add_argument("addresses", nargs="+", help="every broker's HOST:PORT or unix:PATH")
    args = parser.parse_args(argv)
    credentials = None
    options: list[tuple[str, str]] = []
    if args.tls_ca:
        try:
            credentials = tls_credentials(args.tls_ca, args.tls_cert, args.tls_key)
        except (OSError, ValueError) as exc:
            parser.error(f"--tls-ca/--tls-cert/--tls-key: {exc}")
        if args.tls_server_name:
            options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    elif args.tls_cert or args.tls_key:
        parser.error("--tls-cert and --tls-key need --tls-ca (or $DJANGO_WS_TLS_CA)")
    epoch = args.epoch if args.epoch is not None else int(time.time())
    admin_secret = None
    if args.secret_file:
        try:
            admin_secret = read_secrets(args.secret_file, "--secret-file")[0]
        except SecretFileError as exc:
            parser.error(str(exc))
    try:
        released = reshard(
            args.addresses,
            args.shards,
            epoch,
            admin_secret=admin_secret,
            credentials=credentials,
            options=options,
        )
    except grpc.RpcError as exc:
        sys.exit(f"reshard failed: {exc.code().name}: {exc.details()}")
    for address, count in zip(args.addresses, released, strict=True):
        print(f"{address}: now {args.shards} shards (epoch {epoch}), released {count} groups")


if __name__ == "__main__":
    main()
