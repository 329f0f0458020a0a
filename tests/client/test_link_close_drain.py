"""Closing a layer right after it queued publishes waits for the broker to acknowledge
them: nothing the broker has is counted lost, and every message arrives. A real broker,
real gRPC, two layers in this process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from django_ws_broker.server import Broker, BrokerOptions
from django_ws_client.transport.config import parse_config
from django_ws_edge.layer import EdgeChannelLayer

pytestmark = pytest.mark.timeout(60)

MESSAGES = 300


def _publishes_lost() -> float:
    return REGISTRY.get_sample_value("django_ws_edge_publish_lost_total") or 0


async def _ready(layer: EdgeChannelLayer) -> None:
    for _ in range(250):
        if layer.ready:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the layer never linked to the broker")


async def test_closing_right_after_publishing_loses_nothing(tmp_path: Path) -> None:
    address = f"unix:{tmp_path / 'broker.sock'}"
    broker = Broker(BrokerOptions(listen=address))
    await broker.start()
    sender = EdgeChannelLayer(parse_config({"address": address}))
    receiver = EdgeChannelLayer(parse_config({"address": address, "capacity": MESSAGES}))
    try:
        sender.start()
        receiver.start()
        await _ready(sender)
        await _ready(receiver)
        channel = await receiver.new_channel()
        await receiver.group_add("closing", channel)
        lost_before = _publishes_lost()
        for n in range(MESSAGES):
            # Returns once the publish is queued, before the broker has acknowledged it.
            await sender.group_send("closing", {"type": "m", "n": n})
        await sender.close()
        lost = _publishes_lost() - lost_before
        print(f"\nclosed right after {MESSAGES} publishes: {lost:g} counted lost")
        assert lost == 0
        got = [(await asyncio.wait_for(receiver.receive(channel), 5))["n"] for _ in range(MESSAGES)]
        print(f"all {len(got)} arrived, in order")
        assert got == list(range(MESSAGES))
    finally:
        await receiver.close()
        await broker.server.stop(None)
