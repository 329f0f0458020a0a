"""Messages from the client reach the consumer whole, in order and without loss, on the
path where the edge's connection hands them straight to the consumer's inbox: fragmented
messages are reassembled (with control frames between their fragments), frames a
client pipelines behind its handshake are kept, a burst larger than the inbox pauses
reading instead of losing or refusing anything. Fragmented messages that cannot be
delivered (invalid UTF-8, too many fragments) are among the bad frames of
``test_edge_input.py``."""

from __future__ import annotations

import json
import select
import socket

import pytest

from support import rawws
from support.processes import EdgeServer, Stack

pytestmark = pytest.mark.timeout(90)


def address(server: EdgeServer) -> tuple[str, int]:
    host, port = server.bind.rsplit(":", 1)
    return host, int(port)


def next_data_frame(sock: socket.socket) -> tuple[int, bytes]:
    """The next text or binary frame from the server (pongs skipped)."""
    while True:
        opcode, payload = rawws.read_frame(sock)
        if opcode in (0x1, 0x2):
            return opcode, payload
        assert opcode != 0x8, f"closed: {payload!r}"


def echoed(sock: socket.socket) -> str:
    opcode, payload = next_data_frame(sock)
    assert opcode == 0x1
    return str(json.loads(payload)["echo"])


def test_fragmented_messages_arrive_whole_and_in_order(stack: Stack) -> None:
    server = stack.edge(workers=1)
    sock = rawws.open_websocket(address(server))
    sock.settimeout(10)
    try:
        word = "café ünïcode".encode()
        split = word.index("é".encode()) + 1  # cut inside a two-byte character
        sock.sendall(
            rawws.frame(0x1, b"first")
            + rawws.frame(0x1, word[:split], fin=False)
            + rawws.frame(0x9, b"ping between fragments")
            + rawws.frame(0x0, word[split:], fin=True)
            + rawws.frame(0x2, b"\x00\x01", fin=False)
            + rawws.frame(0x0, b"\x02", fin=False)
            + rawws.frame(0x0, b"\x03", fin=True)
            + rawws.frame(0x1, b"last")
        )
        got = [echoed(sock), echoed(sock), next_data_frame(sock), echoed(sock)]
    finally:
        sock.close()
    print(f"\nreceived in order: {got}")
    assert got == ["first", "café ünïcode", (0x2, b"\x00\x01\x02\x03"), "last"]


def test_frames_pipelined_behind_the_handshake_are_delivered(stack: Stack) -> None:
    server = stack.edge(workers=1)
    sock = rawws.connect(address(server), timeout=10)
    try:
        sock.sendall(
            rawws.handshake()
            + rawws.frame(0x1, b"sent before the 101")
            + rawws.frame(0x1, b"and another")
        )
        # The echoes may follow the 101 in the same segment: read the head alone.
        head = rawws.exact_response_head(sock)
        assert rawws.status_of(head) == 101, head
        got = [echoed(sock), echoed(sock)]
    finally:
        sock.close()
    assert got == ["sent before the 101", "and another"]


def test_a_burst_larger_than_the_inbox_pauses_reading_and_loses_nothing(stack: Stack) -> None:
    # An inbox of 5 and a consumer that takes 2 ms a message, against 400 messages
    # sent at once: the edge must stop reading, not drop, refuse or close.
    server = stack.edge(workers=1, env={"TEST_CAPACITY": "5"})
    sock = rawws.open_websocket(address(server), path="/ws/faulty/slow/")
    sock.settimeout(20)
    count = 400
    try:
        sock.sendall(b"".join(rawws.frame(0x1, str(i).encode()) for i in range(count)))
        got = [int(next_data_frame(sock)[1]) for _ in range(count)]
    finally:
        sock.close()
    print(f"\n{count} messages through an inbox of 5: {len(got)} echoed, in order")
    assert got == list(range(count))
    assert "over its capacity" not in server.log()


def test_a_stalled_consumer_stops_the_edge_reading_from_its_client(stack: Stack) -> None:
    # While the consumer stalls, a client that keeps sending must find the socket
    # blocked once the inbox and the kernel buffers are full, instead of the worker
    # reading everything into memory; afterwards every message is handled.
    server = stack.edge(workers=1)
    sock = rawws.open_websocket(address(server), path="/ws/faulty/stall/")
    frame = rawws.frame(0x1, b"x" * 4096)
    total = 16_000  # 64 MiB
    data = memoryview(frame * total)
    try:
        sock.sendall(rawws.frame(0x1, b"4"))  # stall for 4 s
        sock.setblocking(False)
        sent = 0
        blocked = False
        while sent < len(data):
            try:
                sent += sock.send(data[sent:])
            except BlockingIOError:
                # No progress for half a second while the consumer stalls: blocked.
                if not select.select([], [sock], [], 0.5)[1]:
                    blocked = True
                    break
        accepted = sent
        sock.setblocking(True)
        sock.settimeout(60)
        sock.sendall(data[sent:])
        sock.sendall(rawws.frame(0x1, b"count?"))
        payload = next_data_frame(sock)[1]
    finally:
        sock.close()
    print(
        f"\nstalled consumer: the client was blocked after {accepted / 2**20:.1f} of "
        f"{len(data) / 2**20:.0f} MiB; then {int(payload)} of {total} messages were handled"
    )
    assert blocked and accepted < len(data) / 2
    assert int(payload) == total
