"""Roles at the broker, through real broker and edge processes and real gRPC.

Each refusal is printed as the broker said it: the code and the details a caller sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from django_ws_proto import codec
from django_ws_proto.credentials import EDGE_KEY, bearer, edge_id_for, new_edge_key
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

from support import wire
from support.clients import join
from support.processes import Broker, Stack, free_port, wait_until
from support.publisher import Publisher

pytestmark = pytest.mark.timeout(120)


@dataclass
class Secrets:
    """One secret per role, each in its own file, as a Kubernetes Secret mounts them."""

    edge: str
    publisher: str
    admin: str
    edge_file: Path
    publisher_file: Path
    admin_file: Path

    @property
    def broker_args(self) -> tuple[str, ...]:
        return (
            "--edge-secrets",
            str(self.edge_file),
            "--publisher-secrets",
            str(self.publisher_file),
            "--admin-secrets",
            str(self.admin_file),
        )


StartPublisher = Callable[..., Publisher]


@pytest.fixture
def publishers(tmp_path: Path) -> Iterator[StartPublisher]:
    """Start plain Django processes that publish; all are stopped at the end."""
    started: list[Publisher] = []

    def start(broker: Broker, secret_file: Path, name: str = "publisher") -> Publisher:
        env = {"TEST_BROKER": broker.listen, "DJANGO_WS_SECRET_FILE": str(secret_file)}
        started.append(Publisher(tmp_path, env, name))
        return started[-1]

    try:
        yield start
    finally:
        for publisher in started:
            publisher.stop()


def make_secrets(directory: Path) -> Secrets:
    directory.mkdir(exist_ok=True)
    values = {role: secrets.token_hex(32) for role in ("edge", "publisher", "admin")}
    for role, value in values.items():
        (directory / role).write_text(value + "\n")
    return Secrets(
        **values,
        edge_file=directory / "edge",
        publisher_file=directory / "publisher",
        admin_file=directory / "admin",
    )


def secured_broker(stack: Stack, found: Secrets, *extra: str) -> Broker:
    broker = stack.broker(None, *found.broker_args, *extra)
    broker.admin_secret = found.admin
    return broker


def refusal(error: grpc.RpcError, what: str) -> tuple[grpc.StatusCode, str]:
    code, details = error.code(), error.details() or ""  # type: ignore[attr-defined]
    print(f"\n{what}: {code.name}: {details}")
    return code, details


def publish_request(group: str, text: str = "hi") -> broker_pb2.PublishRequest:
    event = codec.encode_dict_event({"type": "relay", "text": text, "from": "test"})
    return broker_pb2.PublishRequest(publish=[broker_pb2.Publish(group=group, event=event)])


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def hello(edge_id: str) -> broker_pb2.EdgeFrame:
    return broker_pb2.EdgeFrame(hello=broker_pb2.Hello(edge_id=edge_id, ordinal=0, shards=1))


async def attach_error(
    stub: broker_pb2_grpc.BrokerStub,
    edge_id: str,
    metadata: tuple[tuple[str, str], ...],
    *,
    write_hello: bool = True,
) -> grpc.aio.AioRpcError:
    """The error an Attach as ``edge_id`` ends with (it must end with one).

    A call refused on its metadata is over at once: writing to it races the refusal,
    and a write that loses turns the status the client sees into INTERNAL. Such calls
    are only read (an accepted one would end after the broker's hello timeout).
    """
    call = stub.Attach(metadata=metadata)
    if write_hello:
        await call.write(hello(edge_id))
    return await wire.rpc_error(call, timeout=30)


async def test_admin_operations_and_attach_need_their_own_role(
    stack: Stack, tmp_path: Path
) -> None:
    found = make_secrets(tmp_path / "secrets")
    broker = secured_broker(stack, found)
    as_publisher = (bearer(found.publisher),)
    as_edge = (bearer(found.edge),)
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)

        # A publisher cannot reshard: the shard count is unchanged.
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Reshard(
                broker_pb2.ReshardRequest(shards=1000, topology_epoch=99), metadata=as_publisher
            )
        code, details = refusal(failed.value, "Reshard with the publisher secret")
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "the publisher role may not call Reshard" in details
        assert broker.stats().shards == 1

        # Nor an edge, nor anyone without a secret; nor can either read Stats.
        for metadata, expected, label in (
            (as_edge, grpc.StatusCode.PERMISSION_DENIED, "Reshard with the edge secret"),
            ((), grpc.StatusCode.UNAUTHENTICATED, "Reshard with no secret"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Reshard(
                    broker_pb2.ReshardRequest(shards=1000, topology_epoch=99), metadata=metadata
                )
            assert refusal(failed.value, label)[0] == expected
        for metadata, label in ((as_publisher, "publisher"), (as_edge, "edge")):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Stats(broker_pb2.StatsRequest(), metadata=metadata)
            code, _ = refusal(failed.value, f"Stats with the {label} secret")
            assert code == grpc.StatusCode.PERMISSION_DENIED

        # A publisher cannot attach as an edge, even with a key and its own id.
        key = new_edge_key()
        error = await attach_error(
            stub, edge_id_for(key), (*as_publisher, (EDGE_KEY, key)), write_hello=False
        )
        code, details = refusal(error, "Attach with the publisher secret")
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "the publisher role may not call Attach" in details
        # Each role does what it is for; an edge may also publish through the unary API
        # (it can on its stream anyway), for code in an edge pod outside a worker.
        for metadata in (as_publisher, as_edge):
            reply = await stub.Publish(publish_request("room"), metadata=metadata)
            assert reply.accepted == 1
        call = stub.Attach(metadata=(*as_edge, (EDGE_KEY, key)))
        await call.write(hello(edge_id_for(key)))
        first = await asyncio.wait_for(call.read(), 10)
        assert first.HasField("welcome")
        stats = broker.stats()
        assert list(stats.edge_ids) == [edge_id_for(key)]
        call.cancel()

    # The admin reshards with the command line tool, its secret given as a file.
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "django_ws_broker.reshard",
            "--shards",
            "1",
            "--epoch",
            "5",
            "--secret-file",
            str(found.admin_file),
            broker.listen,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    print(f"reshard as admin: {done.stdout.strip()}")
    assert done.returncode == 0, done.stderr
    # Without the secret, the tool says why it failed.
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "django_ws_broker.reshard", "--shards", "1", broker.listen],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_WS_ADMIN_SECRETS"},
    )
    print(f"reshard without a secret: {done.stderr.strip()}")
    assert done.returncode != 0 and "UNAUTHENTICATED" in done.stderr
    # No secret value ever reaches the broker's log.
    log = broker.log()
    assert not any(value in log for value in (found.edge, found.publisher, found.admin))
    assert "refused a call to Reshard" in log


async def test_a_wrong_secret_is_unauthenticated(stack: Stack, tmp_path: Path) -> None:
    found = make_secrets(tmp_path / "secrets")
    broker = secured_broker(stack, found)
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        wrong = secrets.token_hex(32)
        for metadata, label in (
            ((bearer(wrong),), "Publish with a wrong secret"),
            ((("authorization", found.publisher),), "Publish without 'Bearer '"),
            ((bearer(found.publisher[:-1]),), "Publish with the secret cut short"),
            ((), "Publish with no secret"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Publish(publish_request("room"), metadata=metadata)
            code, details = refusal(failed.value, label)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert "Publish needs the publisher role's secret" in details
        assert broker.stats().published == 0


async def test_a_stolen_edge_id_cannot_attach_and_the_live_edge_keeps_receiving(
    stack: Stack, tmp_path: Path, publishers: StartPublisher
) -> None:
    found = make_secrets(tmp_path / "secrets")
    broker = secured_broker(stack, found)
    server = stack.edge(
        workers=1,
        broker=broker.listen,
        env={"DJANGO_WS_SECRET_FILE": str(found.edge_file)},
    )
    member, greeting = await join(f"{server.ws_url}/ws/group/room/")
    # The id an attacker would see: in every channel name, and in Stats.
    stolen = str(greeting["channel"]).partition("!")[0]
    assert list(broker.stats().edge_ids) == [stolen]
    publisher = publishers(broker, found.publisher_file)

    async def received(count: int, label: str) -> int:
        for i in range(count):
            answer = await asyncio.to_thread(publisher.publish, group="room", text=f"{label}{i}")
            assert answer == "ok", answer
        got = 0
        with pytest.raises(asyncio.TimeoutError):
            while True:
                message = json.loads(await asyncio.wait_for(member.recv(), 2))
                got += message["text"].startswith(label)
        return got

    before = await received(20, "before")
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        as_edge = (bearer(found.edge),)
        # Even with the edge role's secret, the id is useless without its key ...
        attacker_key = new_edge_key()
        error = await attach_error(stub, stolen, (*as_edge, (EDGE_KEY, attacker_key)))
        code, details = refusal(error, "Attach with a stolen edge id and another key")
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "not the one derived from this stream's edge key" in details
        # ... and with no key at all.
        error = await attach_error(stub, stolen, as_edge, write_hello=False)
        code, details = refusal(error, "Attach with a stolen edge id and no key")
        assert code == grpc.StatusCode.UNAUTHENTICATED and EDGE_KEY in details
        # Without the role secret, nothing gets as far as the key.
        error = await attach_error(stub, stolen, ((EDGE_KEY, attacker_key),), write_hello=False)
        assert refusal(error, "Attach with no role secret")[0] == grpc.StatusCode.UNAUTHENTICATED
    # The live edge kept its stream: the same one id attached, every message delivered,
    # also a direct send to the member's channel.
    assert list(broker.stats().edge_ids) == [stolen]
    after = await received(20, "after")
    answer = await asyncio.to_thread(
        publisher.publish, channel=str(greeting["channel"]), text="direct"
    )
    assert answer == "ok", answer
    direct = json.loads(await asyncio.wait_for(member.recv(), 5))
    print(f"live edge received {before}/20 before and {after}/20 after the attempts")
    assert (before, after, direct["text"]) == (20, 20, "direct")
    await member.close()


async def test_the_broker_accepts_every_listed_secret_and_rotates_without_a_refusal(
    stack: Stack, tmp_path: Path, publishers: StartPublisher
) -> None:
    found = make_secrets(tmp_path / "secrets")
    old, new = found.publisher, secrets.token_hex(32)
    found.publisher_file.write_text(f"{old}\n{new}\n")  # step 1: the broker accepts both
    broker = secured_broker(stack, found)
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        for value, label in ((old, "current"), (new, "next")):
            reply = await stub.Publish(publish_request("room"), metadata=(bearer(value),))
            print(f"\nPublish with the {label} secret: accepted {reply.accepted}")
            assert reply.accepted == 1

    # A client reads the same kind of file and sends its first line; it is re-read when
    # it changes. Publish all along while the secret rotates: not one may be refused.
    client_file = tmp_path / "client-secret"
    client_file.write_text(f"{old}\n{new}\n")
    publisher = publishers(broker, client_file)
    published = 0

    def replace(path: Path, text: str) -> None:
        # Atomically, as Kubernetes updates a mounted Secret (a new file swapped in).
        staged = path.with_suffix(".new")
        staged.write_text(text)
        staged.replace(path)

    async def publish_for(seconds: float) -> None:
        nonlocal published
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            answer = await asyncio.to_thread(publisher.publish, group="room", text="x")
            assert answer == "ok", f"refused during the rotation: {answer}"
            published += 1
            await asyncio.sleep(0.01)

    await publish_for(0.5)
    replace(client_file, f"{new}\n{old}\n")  # step 2: clients move to the next secret
    await publish_for(2.5)
    replace(found.publisher_file, f"{new}\n")  # step 3: the broker drops the old one
    await publish_for(2.5)
    print(f"published {published} times through the rotation, none refused")
    assert broker.stats().published == 2 + published

    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Publish(publish_request("room"), metadata=(bearer(old),))
        code, _ = refusal(failed.value, "Publish with the retired secret")
        assert code == grpc.StatusCode.UNAUTHENTICATED
    # A client still holding only the retired secret is told so by name.
    client_file.write_text(f"{old}\n")
    stale = publishers(broker, client_file, name="stale")
    answer = await asyncio.to_thread(stale.publish, group="room", text="x")
    print(f"client with the retired secret: {answer}")
    assert answer.startswith("error BrokerRefused") and "UNAUTHENTICATED" in answer


async def test_the_metrics_page_names_no_edge(stack: Stack, tmp_path: Path) -> None:
    found = make_secrets(tmp_path / "secrets")
    port = free_port()
    broker = secured_broker(stack, found, "--metrics", f"127.0.0.1:{port}")
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        call = await wire.attach(stub, "ws.watched", ["room"], metadata=(bearer(found.edge),))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Stats(broker_pb2.StatsRequest(), metadata=(bearer(found.publisher),))
        page = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
        call.cancel()
    lines = [
        line
        for line in page.splitlines()
        if line.startswith(("django_ws_broker_queue_depth", "django_ws_broker_access_refused"))
    ]
    print("\n" + "\n".join(lines))
    assert wire.edge_id("ws.watched") not in page and 'edge="' not in page
    assert 'django_ws_broker_access_refused_total{reason="wrong_role"} 1.0' in page


async def test_without_secrets_roles_are_off_but_edge_ids_stay_bound(stack: Stack) -> None:
    broker = stack.broker()
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        reply = await stub.Publish(publish_request("room"))
        assert reply.accepted == 1
        assert (await stub.Stats(broker_pb2.StatsRequest())).published == 1
        live = await wire.attach(stub, "ws.live", ["room"])
        error = await attach_error(stub, wire.edge_id("ws.live"), (), write_hello=False)
        code, _ = refusal(error, "Attach with a stolen edge id, no secrets configured")
        assert code == grpc.StatusCode.UNAUTHENTICATED
        error = await attach_error(
            stub, wire.edge_id("ws.live"), ((EDGE_KEY, wire.edge_key("ws.other")),)
        )
        assert refusal(error, "... and with another key")[0] == grpc.StatusCode.PERMISSION_DENIED
        assert (await wire.sync(live, 7))[-1].synced == 7  # the live stream is untouched
        live.cancel()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (("edge",), "--publisher-secrets, --admin-secrets missing"),
        (("edge", "publisher", "admin", "short"), "is not a usable secret"),
        (("edge", "publisher", "same"), "list the same secret"),
        (("edge", "publisher", "missing"), "cannot read"),
    ],
)
def test_bad_secret_configuration_stops_the_broker_with_a_clear_error(
    tmp_path: Path, files: tuple[str, ...], expected: str
) -> None:
    found = make_secrets(tmp_path / "secrets")
    args = ["--edge-secrets", str(found.edge_file)]
    if "publisher" in files:
        args += ["--publisher-secrets", str(found.publisher_file)]
    if "admin" in files:
        args += ["--admin-secrets", str(found.admin_file)]
    if "short" in files:
        found.admin_file.write_text("tooshort\n")
    if "same" in files:
        args += ["--admin-secrets", str(found.edge_file)]
    if "missing" in files:
        args += ["--admin-secrets", str(tmp_path / "nowhere")]
    done = subprocess.run(
        [sys.executable, "-m", "django_ws_broker", "--listen", f"127.0.0.1:{free_port()}", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    message = done.stderr.strip().splitlines()[-1]
    print(f"\n{message}")
    assert done.returncode != 0 and expected in message
    assert "tooshort" not in message and found.edge not in done.stderr


def test_an_edge_with_a_wrong_secret_is_not_ready_and_says_why(
    stack: Stack, tmp_path: Path
) -> None:
    found = make_secrets(tmp_path / "secrets")
    broker = secured_broker(stack, found)
    server = stack.edge(
        workers=1,
        broker=broker.listen,
        env={"DJANGO_WS_SECRET_FILE": str(found.publisher_file)},
        wait=False,
    )
    wait_until(lambda: "refused this edge" in server.log(), 30, "the refusal in the edge's log")
    line = next(line for line in server.log().splitlines() if "refused this edge" in line)
    print(f"\n{line}")
    assert "the publisher role may not call Attach" in line
    assert server.readyz()[0] != 200
