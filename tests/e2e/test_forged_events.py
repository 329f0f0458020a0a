"""The server's own ``websocket.*`` events cannot be forged through the channel layer:
a sender is refused with a clear error, and one that still arrives (from an older
sender, or a publish made by hand) is dropped and counted, never ending a consumer
whose socket then stays open answering nothing."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from django_ws_proto import codec
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

from support.clients import join
from support.processes import Stack

pytestmark = pytest.mark.timeout(90)

FORGED = {"type": "websocket.disconnect", "code": 1000}


async def still_answers(ws: ClientConnection, group: str) -> str:
    """ "answers" when the connection still works, "closed" when the server closed it
    properly; fails when it stays open and answers nothing."""
    try:
        await ws.send(json.dumps({"text": "are you there", "group": group}))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            if message.get("text") == "are you there":
                return "answers"
    except ConnectionClosed:
        return f"closed {ws.close_code}"
    except TimeoutError:
        pass
    raise AssertionError("the socket is open but its consumer answers nothing")


async def test_group_send_of_websocket_disconnect_is_refused_at_the_sender(stack: Stack) -> None:
    server = stack.edge(workers=1)
    url = f"{server.ws_url}/ws/group/forge-room/"
    attacker, _ = await join(url)
    victim, _ = await join(url)

    await attacker.send(json.dumps({"text": "bye", **FORGED}))
    reply = json.loads(await asyncio.wait_for(attacker.recv(), 5))
    print(f"\nthe sender was told: {reply}")
    assert reply["error"] == "refused"
    assert "websocket.disconnect" in reply["detail"]

    outcome = await still_answers(victim, "forge-room")
    print(f"the victim after the forged disconnect: {outcome}")
    assert outcome == "answers"
    await attacker.close()
    await victim.close()


async def test_a_forged_disconnect_that_reaches_the_edge_is_dropped_and_counted(
    stack: Stack,
) -> None:
    """An older sender that does not refuse: the event is published straight to the
    broker, as any publisher can."""
    broker = stack.broker()
    server = stack.edge(workers=1, broker=broker.listen)
    victim, _ = await join(f"{server.ws_url}/ws/group/forge-old/")

    publish = broker_pb2.Publish(group="forge-old", event=codec.encode_dict_event(FORGED))
    with grpc.insecure_channel(broker.listen) as channel:
        reply = broker_pb2_grpc.BrokerStub(channel).Publish(
            broker_pb2.PublishRequest(publish=[publish], shards=1), timeout=5
        )
    assert reply.accepted == 1, reply

    outcome = await still_answers(victim, "forge-old")
    dropped = [
        line
        for line in server.metrics().splitlines()
        if line.startswith("django_ws_edge_lifecycle_events_dropped_total")
    ]
    print(f"\nthe victim after a forged disconnect from the broker: {outcome}; {dropped}")
    assert outcome == "answers"
    assert dropped and float(dropped[0].split()[-1]) == 1.0
    await victim.close()
