"""gRPC between edges, Django processes and brokers over TLS, and mutual TLS."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.certs import CertificateAuthority, Pair
from support.clients import join
from support.processes import Broker, Stack, free_port, wait_until

pytestmark = pytest.mark.timeout(90)


def probe(address: str, credentials: grpc.ChannelCredentials) -> grpc.StatusCode | str:
    with grpc.secure_channel(address, credentials) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[attr-defined, no-any-return]
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def mutual_tls_broker(
    stack: Stack, tmp_path: Path, client_name: str
) -> tuple[CertificateAuthority, Broker, Pair]:
    """A broker that requires client certificates from ``ca``, serving; and a client
    certificate it accepts."""
    ca = CertificateAuthority(tmp_path)
    server = ca.issue("broker", server=True)
    client = ca.issue(client_name, server=False)
    address = f"127.0.0.1:{free_port()}"
    # Broker readiness is checked over TLS here, not by the plaintext helper.
    broker = stack.broker_unchecked(
        address,
        "--tls-cert",
        str(server.cert),
        "--tls-key",
        str(server.key),
        "--tls-client-ca",
        str(ca.path),
    )
    trusted = grpc.ssl_channel_credentials(
        ca.path.read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
    )
    wait_until(lambda: probe(address, trusted) == "SERVING", 20, "the TLS broker")
    return ca, broker, client


async def test_mutual_tls_between_edge_and_broker(stack: Stack, tmp_path: Path) -> None:
    ca, broker, client = mutual_tls_broker(stack, tmp_path, "edge")
    address = broker.listen

    # A client that presents no certificate, or one from another CA, is refused.
    no_cert = grpc.ssl_channel_credentials(ca.path.read_bytes())
    assert probe(address, no_cert) == grpc.StatusCode.UNAVAILABLE
    stranger_ca = CertificateAuthority(tmp_path, name="other CA")
    stranger = stranger_ca.issue("stranger", server=False)
    foreign = grpc.ssl_channel_credentials(
        ca.path.read_bytes(), stranger.key.read_bytes(), stranger.cert.read_bytes()
    )
    assert probe(address, foreign) == grpc.StatusCode.UNAVAILABLE
    # Plaintext is refused too.
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)

    edge = stack.edge(
        workers=1,
        broker=address,
        env={
            "TEST_TLS_CA": str(ca.path),
            "TEST_TLS_CERT": str(client.cert),
            "TEST_TLS_KEY": str(client.key),
        },
    )
    ws, _ = await join(f"{edge.ws_url}/ws/group/secure/")
    await ws.send(json.dumps({"text": "over mutual TLS"}))
    assert json.loads(await ws.recv())["text"] == "over mutual TLS"
    await ws.close()
    assert broker.alive()


def test_reshard_reaches_tls_brokers_over_tls(stack: Stack, tmp_path: Path) -> None:
    """The reshard tool speaks TLS (mutual TLS here) when given a CA, and a plaintext
    attempt at a TLS broker fails instead of silently skipping it."""
    import subprocess
    import sys

    from support.processes import base_env

    ca, broker, client = mutual_tls_broker(stack, tmp_path, "operator")
    address = broker.listen

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "django_ws_broker.reshard", "--shards", "1", "--epoch", "7",
             *args, address],
            capture_output=True, text=True, timeout=30, env=base_env(**env),
        )

    plaintext = run()
    assert plaintext.returncode != 0 and "reshard failed: " in plaintext.stderr
    # The same variables edges read name the CA and client certificate.
    done = run(
        DJANGO_WS_TLS_CA=str(ca.path),
        DJANGO_WS_TLS_CERT=str(client.cert),
        DJANGO_WS_TLS_KEY=str(client.key),
    )
    assert done.returncode == 0, done.stderr
    print(f"\nreshard over mutual TLS: {done.stdout.strip()}")
    assert "now 1 shards (epoch 7)" in done.stdout
    flags = run("--tls-ca", str(ca.path), "--tls-cert", str(client.cert), "--tls-key", str(client.key))
    assert flags.returncode == 0, flags.stderr
    half = run("--tls-cert", str(client.cert), "--tls-key", str(client.key))
    assert half.returncode == 2 and "--tls-ca" in half.stderr
    assert broker.alive()
