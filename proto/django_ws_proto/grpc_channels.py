"""Opening gRPC channels to brokers, in one place.

Edges (asyncio streams), plain Django processes (sync unary calls) and the operator's
tools (``reshard``) all reach brokers; each picks TLS or plaintext the same way here, so
a cluster configured for TLS is never reached in plaintext by one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

Options = Sequence[tuple[str, Any]]


def tls_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Credentials that verify the broker against ``ca`` and, for mutual TLS, present
    ``cert`` and ``key`` (both or neither)."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate and its key go together")
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


def open_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None, options: Options = ()
) -> grpc.Channel:
    """A sync channel: TLS when ``credentials`` are given, plaintext otherwise."""
    if credentials is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, credentials, options=list(options))


def open_aio_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None, options: Options = ()
) -> grpc.aio.Channel:
    """An asyncio channel: TLS when ``credentials`` are given, plaintext otherwise."""
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    return grpc.aio.secure_channel(address, credentials, options=list(options))
