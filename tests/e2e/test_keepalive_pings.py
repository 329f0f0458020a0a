"""Keepalive pings from the worker-wide schedule, through a real server and raw sockets:
a client that answers them stays connected; one that does not is closed with 1011 once
PING_TIMEOUT passes, and counted."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from support import rawws
from support.processes import Stack, wait_until

pytestmark = pytest.mark.timeout(60)

INTERVAL = 0.3
TIMEOUT = 0.6
PING, PONG, TEXT, CLOSE = 0x9, 0xA, 0x1, 0x8


class Answering(threading.Thread):
    """Reads the server's frames for ``seconds``, answering every ping."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.seconds = seconds
        self.pings: list[float] = []
        self.closed_with: int | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        self.sock.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                opcode, payload = rawws.read_frame(self.sock)
            except TimeoutError:
                continue
            if opcode == PING:
                self.pings.append(time.monotonic())
                self.sock.sendall(rawws.frame(PONG, payload))
            elif opcode == CLOSE:
                self.closed_with = struct.unpack("!H", payload[:2])[0]
                return


def test_an_answering_client_stays_and_a_silent_one_is_closed_1011(stack: Stack) -> None:
    server = stack.edge(
        workers=1, env={"TEST_PING_INTERVAL": str(INTERVAL), "TEST_PING_TIMEOUT": str(TIMEOUT)}
    )
    host, port = server.bind.rsplit(":", 1)
    address = (host, int(port))
    answering_sock = rawws.open_websocket(address)
    silent = rawws.open_websocket(address)
    answering = Answering(answering_sock, seconds=4 * (INTERVAL + TIMEOUT))
    answering.start()

    # The silent client reads (so that nothing backs up) but never answers a ping.
    silent.settimeout(10)
    first_ping = None
    code = None
    while code is None:
        opcode, payload = rawws.read_frame(silent)
        if opcode == PING and first_ping is None:
            first_ping = time.monotonic()
        elif opcode == CLOSE:
            code = struct.unpack("!H", payload[:2])[0]
    closed_after = time.monotonic() - (first_ping or 0.0)
    answering.join()

    gaps = [b - a for a, b in zip(answering.pings, answering.pings[1:], strict=False)]
    print(
        f"\nsilent client closed with {code}, {closed_after:.2f}s after its first ping "
        f"(PING_TIMEOUT {TIMEOUT}s); the answering one got {len(answering.pings)} pings, "
        f"{min(gaps):.2f} to {max(gaps):.2f}s apart (PING_INTERVAL {INTERVAL}s), "
        f"closed: {answering.closed_with}"
    )
    assert first_ping is not None
    assert code == 1011
    assert closed_after >= TIMEOUT - 0.05  # not before the pong was due
    assert answering.closed_with is None
    assert len(answering.pings) >= 4
    assert min(gaps) >= INTERVAL - 0.1  # one ping per interval, not more

    # Still served: the echo route answers the client that kept answering pings.
    answering_sock.settimeout(5)
    answering_sock.sendall(rawws.frame(TEXT, b"still here"))
    while True:
        opcode, payload = rawws.read_frame(answering_sock)
        if opcode == TEXT:
            break
    assert b"still here" in payload
    wait_until(
        lambda: "django_ws_edge_keepalive_timeouts_total 1.0" in server.metrics(),
        10,
        "the keepalive timeout counted",
    )
    answering_sock.close()
    silent.close()
