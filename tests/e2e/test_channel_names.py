"""Channel names cannot be guessed: a client that learns its own name (and the edge ids
of the other workers) reaches no other connection by sending to names near its own,
where an app sends to a client-supplied channel name."""

from __future__ import annotations

import asyncio
import json

import pytest

from support.clients import join
from support.processes import Stack

pytestmark = pytest.mark.timeout(120)

GUESSES = 1000


def guesses(own: str, edge_ids: list[str], count: int) -> list[str]:
    """Names an attacker would try: sequential counters under every edge id it knows,
    and the numeric neighbours of its own name's random part."""
    home, _, connection = own.partition("!")
    found: list[str] = []
    neighbours = count // 2
    try:
        mine = int(connection, 16)
    except ValueError:
        mine = 0
    width = len(connection)
    for step in range(1, neighbours // 2 + 1):
        for value in (mine - step, mine + step):
            if value >= 0:
                found.append(f"{home}!{value:0{width}x}")
    counter = 1
    while len(found) < count:
        for edge_id in edge_ids:
            found.append(f"{edge_id}!{counter:x}")
        counter += 1
    return [name for name in found[:count] if name != own]


async def test_a_thousand_guessed_channel_names_reach_no_one(stack: Stack) -> None:
    server = stack.edge(workers=2)
    url = f"{server.ws_url}/ws/group/guess-room/"
    attacker, hello = await join(url)
    victims = [await join(url) for _ in range(12)]
    own = hello["channel"]
    # Group relays show the sender's channel: the attacker may know every worker's id.
    edge_ids = sorted(
        {own.partition("!")[0]} | {v[1]["channel"].partition("!")[0] for v in victims}
    )
    same_worker = [v for v in victims if v[1]["pid"] == hello["pid"]]
    assert same_worker, "no victim shares the attacker's worker; the test proves nothing"
    print(f"\nattacker {own}; {len(victims)} victims, {len(same_worker)} on its worker")
    print(f"a victim's name, for comparison: {victims[0][1]['channel']}")

    tried = guesses(own, edge_ids, GUESSES)
    assert len(tried) >= GUESSES - 1
    for name in tried:
        await attacker.send(json.dumps({"text": "guessed", "send_to": name}))
    # A marker sent last, to a victim's real name, through the same consumer: once it
    # arrives, every guess before it has been delivered or dropped.
    marked_ws, marked_hello = victims[0]
    await attacker.send(json.dumps({"text": "marker", "send_to": marked_hello["channel"]}))
    reached = 0
    while True:
        message = json.loads(await asyncio.wait_for(marked_ws.recv(), 10))
        if message.get("text") == "marker":
            break
        reached += 1
    for ws, _ in victims[1:]:
        while True:
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), 0.05))
            except TimeoutError:
                break
            reached += 1
    # Nothing came back to the attacker either (an error would say a send was refused).
    try:
        echoed = json.loads(await asyncio.wait_for(attacker.recv(), 0.2))
    except TimeoutError:
        echoed = None
    print(f"{len(tried)} guessed names sent to: {reached} reached a connection")
    assert reached == 0
    assert echoed is None, echoed
    for ws, _ in [(attacker, hello), *victims]:
        await ws.close()
