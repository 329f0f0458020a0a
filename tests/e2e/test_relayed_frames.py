"""A group message relayed verbatim to many members of one worker is framed once and
written to each socket (``ws_internals.FrameCache``): every member still gets every
message whole and in order, text and binary, short, medium and long, with and without
compression."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from support.processes import Stack

pytestmark = pytest.mark.timeout(90)

MEMBERS = 40

# Lengths around each of websocket framing's length encodings (7 bits, 16, 64), and
# one past what the worker's frame cache keeps.
TEXTS = ["hi", "x" * 125, "y" * 126, "z" * 65535, "w" * 65536, "v" * 70_000, "hi"]
BINARIES = [b"\x00\x01", b"\xff" * 300, b"\x7f" * 66_000]


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
async def test_every_member_gets_every_relayed_message_whole_and_in_order(
    stack: Stack, compression: bool
) -> None:
    env = {"TEST_COMPRESSION": "1"} if compression else {}
    server = stack.edge(workers=1, env=env)
    url = f"{server.ws_url}/ws/relay/frames/"
    members = [
        await connect(url, compression="deflate" if compression else None, max_size=2**20)
        for _ in range(MEMBERS)
    ]
    for member in members:
        assert await asyncio.wait_for(member.recv(), 5) == "joined"
        negotiated = member.protocol.extensions
        assert bool(negotiated) is compression, negotiated
    sender = members[0]
    for text in TEXTS:
        await sender.send(text)
    for data in BINARIES:
        await sender.send(data)
    expected: list[str | bytes] = [*TEXTS, *BINARIES]
    for n, member in enumerate(members):
        got = [await asyncio.wait_for(member.recv(), 10) for _ in expected]
        assert [type(m) for m in got] == [type(m) for m in expected], n
        assert got == expected, f"member {n} got other messages"
    print(
        f"\n{MEMBERS} members on one worker ({'deflate' if compression else 'no compression'}) "
        f"each got all {len(expected)} relayed messages, "
        f"{sum(len(m) for m in expected):,} bytes, in order"
    )
    for member in members:
        await member.close()
