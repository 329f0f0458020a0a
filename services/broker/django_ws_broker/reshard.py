"""``python -m django_ws_broker.reshard``: change the shard count of a running cluster.

Tells every listed broker the new count and a new topology epoch. Each broker drops the
subscriptions of groups it no longer owns and announces the new count to its attached
edges, which move those groups' subscriptions to their new owners. Growing: start the
new brokers first (with the new ``--shards`` and ``--topology-epoch``), then reshard.
Shrinking: reshard, then stop the brokers past the new count.

    python -m django_ws_broker.reshard --shards 4 --epoch 2 \\
        broker-0:50051 broker-1:50051 broker-2:50051 broker-3:50051
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc

from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc


def reshard(addresses: list[str], shards: int, epoch: int, timeout: float = 5.0) -> list[int]:
    """Reshard each broker in turn; returns how many groups each released."""
    released = []
    for address in addresses:
        with grpc.insecure_channel(address) as channel:
            reply = broker_pb2_grpc.BrokerStub(channel).Reshard(
                broker_pb2.ReshardRequest(shards=shards, topology_epoch=epoch), timeout=timeout
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
    parser.add_argument("addresses", nargs="+", help="every broker's HOST:PORT or unix:PATH")
    args = parser.parse_args(argv)
    epoch = args.epoch if args.epoch is not None else int(time.time())
    try:
        released = reshard(args.addresses, args.shards, epoch)
    except grpc.RpcError as exc:
        sys.exit(f"reshard failed: {exc.code().name}: {exc.details()}")
    for address, count in zip(args.addresses, released, strict=True):
        print(f"{address}: now {args.shards} shards (epoch {epoch}), released {count} groups")


if __name__ == "__main__":
    main()
