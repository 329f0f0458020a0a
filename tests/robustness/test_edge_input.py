"""Bad input at the edge, from raw sockets: each gets the right answer, and the worker
keeps serving a well-behaved client afterwards."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from support import rawws
from support.processes import EdgeServer, Stack, wait_until

pytestmark = pytest.mark.timeout(90)


def address(server: EdgeServer) -> tuple[str, int]:
    host, port = server.bind.rsplit(":", 1)
    return host, int(port)


async def still_serves(server: EdgeServer) -> None:
    async with connect(f"{server.ws_url}/ws/echo/") as ws:
        await ws.send("still here")
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["echo"] == "still here"


def answer(server: EdgeServer, payload: bytes) -> tuple[int | None, bytes]:
    sock = rawws.connect(address(server))
    try:
        sock.sendall(payload)
        head = rawws.response_head(sock)
    finally:
        sock.close()
    return rawws.status_of(head), head


async def test_requests_that_are_not_websocket_handshakes(stack: Stack) -> None:
    server = stack.edge(workers=1)
    cases = {
        "plain GET": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "HTTP/1.0": b"GET /ws/echo/ HTTP/1.0\r\n\r\n",
        "POST upgrade": rawws.handshake().replace(b"GET", b"POST", 1),
        "garbage": bytes(range(256)) * 4 + b"\r\n\r\n",
        "TLS ClientHello": bytes.fromhex("160301002a0100002603035f") + bytes(40) + b"\r\n\r\n",
    }
    statuses = {name: answer(server, payload)[0] for name, payload in cases.items()}
    print(f"\nanswers: {statuses}")
    assert statuses["plain GET"] == 426
    assert statuses["HTTP/1.0"] == 505  # HTTP Version Not Supported: websockets needs 1.1
    for name in ("garbage", "TLS ClientHello"):
        assert statuses[name] in (400, None), name  # 400, or the socket just closed
    assert statuses["POST upgrade"] in (400, 405)
    await still_serves(server)


async def test_bad_requests_are_logged_at_most_once_per_source_per_second(stack: Stack) -> None:
    server = stack.edge(workers=1)
    started = time.monotonic()
    for _ in range(30):
        assert answer(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 426
    elapsed = time.monotonic() - started
    await still_serves(server)
    logged = server.log().count("that is not a websocket handshake")
    print(f"\n30 bad requests in {elapsed:.2f}s: {logged} log line(s)")
    assert 1 <= logged <= int(elapsed) + 1


async def test_bad_handshake_headers(stack: Stack) -> None:
    server = stack.edge(workers=1, env={"TEST_MAX_HEADER_LINE": "1024", "TEST_MAX_HEADERS": "32"})
    good = rawws.handshake()
    no_key = b"\r\n".join(
        line for line in good.split(b"\r\n") if not line.startswith(b"Sec-WebSocket-Key")
    )
    bad_key = good.replace(rawws.KEY.encode(), b"not-base64!")
    bad_version = good.replace(b"Version: 13", b"Version: 8")
    long_header = rawws.handshake(X_Long="a" * 2000)
    fine_header = rawws.handshake(X_Long="a" * 900)
    flood = rawws.handshake(**{f"X_H{i}": "v" for i in range(100)})
    long_line = f"GET /{'a' * 5000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    assert answer(server, no_key)[0] == 400
    assert answer(server, bad_key)[0] == 400
    status, head = answer(server, bad_version)
    assert status == 400 and b"Sec-WebSocket-Version" in head
    # websockets answers the precise statuses: 431 Request Header Fields Too Large for a
    # header line over MAX_HEADER_LINE or more than MAX_HEADERS headers, 414 URI Too Long
    # for a request line over the limit.
    limits = {
        name: answer(server, payload)[0]
        for name, payload in (
            ("long header", long_header),
            ("header flood", flood),
            ("long request line", long_line),
        )
    }
    print(f"\nlimit answers: {limits}")
    assert limits == {"long header": 431, "header flood": 431, "long request line": 414}
    assert answer(server, fine_header)[0] == 101
    await still_serves(server)


async def test_slowloris_handshake_is_dropped_after_the_handshake_timeout(stack: Stack) -> None:
    server = stack.edge(workers=1, env={"TEST_HANDSHAKE_TIMEOUT": "1"})
    sock = rawws.connect(address(server))
    started = time.monotonic()
    closed = False
    try:
        for byte in rawws.handshake():
            sock.sendall(bytes([byte]))
            await asyncio.sleep(0.2)
            if time.monotonic() - started > 4:
                break
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    closed = closed or rawws.closed_within(sock, 2)
    elapsed = time.monotonic() - started
    sock.close()
    print(f"\nslowloris dropped after {elapsed:.1f}s (handshake timeout 1s)")
    assert closed and elapsed < 4
    await still_serves(server)


@pytest.mark.parametrize(
    ("name", "frames", "expected"),
    [
        ("text that is not UTF-8", [rawws.frame(0x1, b"\xff\xfe\xfd")], 1007),
        ("message over max_size", [rawws.frame(0x1, b"a" * 2048)], 1009),
        (
            "fragments over max_size",
            [rawws.frame(0x1, b"a" * 600, fin=False)]
            + [rawws.frame(0x0, b"a" * 600, fin=False) for _ in range(3)],
            1009,
        ),
        ("unmasked client frame", [rawws.frame(0x1, b"hello", masked=False)], 1002),
        ("reserved opcode", [rawws.frame(0x3, b"x")], 1002),
        ("reserved bit", [rawws.frame(0x1, b"x", rsv=0b100)], 1002),
        ("control frame over 125 bytes", [rawws.frame(0x9, b"p" * 126)], 1002),
        ("fragmented control frame", [rawws.frame(0x9, b"p", fin=False)], 1002),
        # Fragments are reassembled by the edge's connection, with websockets' rules.
        (
            "fragmented text that is not UTF-8",
            [rawws.frame(0x1, b"ok \xc3", fin=False), rawws.frame(0x0, b"\x28", fin=True)],
            1007,
        ),
        (
            "more fragments than WEBSOCKETS_MAX_FRAGMENTS",
            [rawws.frame(0x1, b"a", fin=False)] + [rawws.frame(0x0, b"a", fin=False)] * 20,
            1009,
        ),
    ],
)
def test_bad_frames_close_with_the_right_code(
    stack: Stack, name: str, frames: list[bytes], expected: int
) -> None:
    server = stack.edge(
        workers=1, env={"TEST_MAX_MESSAGE_BYTES": "1024", "WEBSOCKETS_MAX_FRAGMENTS": "16"}
    )
    sock = rawws.open_websocket(address(server))
    try:
        for data in frames:
            sock.sendall(data)
        assert rawws.close_code(sock) == expected, name
    finally:
        sock.close()
    asyncio.run(still_serves(server))


def test_ping_flood_is_answered_and_bounded(stack: Stack) -> None:
    server = stack.edge(workers=1)
    ping = rawws.frame(0x9, b"p" * 125)
    # A client that reads its pongs: 20,000 pings are answered, the connection lives.
    sock = rawws.open_websocket(address(server))
    sock.sendall(ping * 20_000)
    pongs = 0
    sock.settimeout(10)
    while pongs < 20_000:
        opcode, _ = rawws.read_frame(sock)
        pongs += opcode == 0xA
    sock.sendall(rawws.frame(0x1, b"after the flood"))
    opcode, payload = rawws.read_frame(sock)
    assert opcode == 0x1 and json.loads(payload)["echo"] == "after the flood"
    sock.close()
    # A client that floods pings and never reads its pongs cannot make the worker
    # buffer them without bound: it is cut off.
    flooder = rawws.open_websocket(address(server), rcvbuf=4096)
    flooder.settimeout(10)
    sent = 0
    cut_off = False
    try:
        for _ in range(2000):
            flooder.sendall(ping * 100)
            sent += 100
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        cut_off = True
    flooder.close()
    worker = max(server.worker_pids())
    import psutil

    rss_mb = psutil.Process(worker).memory_info().rss / 2**20
    print(f"\nunread ping flood: cut off={cut_off} after {sent} pings; worker RSS {rss_mb:.0f} MiB")
    assert cut_off and rss_mb < 200
    asyncio.run(still_serves(server))


async def test_inbound_rate_limit_closes_with_1008(stack: Stack) -> None:
    server = stack.edge(workers=1, env={"TEST_RATE_LIMIT": "20", "TEST_RATE_BURST": "5"})
    async with connect(f"{server.ws_url}/ws/echo/") as ws:
        with pytest.raises(ConnectionClosed):
            for i in range(50):
                await ws.send(str(i))
            while True:  # read the echoes, then the close frame
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008 and ws.close_reason == "rate limit exceeded"
    assert "django_ws_edge_rate_limited_total 1.0" in server.metrics()
    # Within the limit, a client is never cut off.
    async with connect(f"{server.ws_url}/ws/echo/") as ws:
        for i in range(5):
            await ws.send(str(i))
            await ws.recv()
            await asyncio.sleep(0.06)
        assert ws.close_code is None


@pytest.mark.parametrize("unused", [None])
def test_socket_helpers_are_sane(unused: None) -> None:
    assert rawws.status_of(b"HTTP/1.1 426 Upgrade Required\r\n") == 426
    assert rawws.frame(0x1, b"x", masked=False) == b"\x81\x01x"
    with socket.socket() as sock:
        assert wait_until(lambda: True, 1, "nothing") is None and sock.fileno() > 0
