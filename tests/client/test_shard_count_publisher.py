"""A Django process whose settings count other shards than the brokers is refused
with the reason, not routed to brokers that do not own its groups."""

from __future__ import annotations

import pytest

from django_ws_client.exceptions import BrokerRefused
from django_ws_client.transport.grpc_layer import GRPCTransportLayer

from support.processes import Stack

pytestmark = pytest.mark.timeout(60)


async def test_a_django_process_counting_other_shards_gets_the_reason(stack: Stack) -> None:
    broker = stack.broker(None, "--ordinal", "0", "--shards", "2")
    layer = GRPCTransportLayer(address=broker.listen)  # one broker: shards 1
    try:
        with pytest.raises(
            BrokerRefused, match="shard count mismatch: this is broker 0 of 2"
        ) as refused:
            await layer.group_send("room", {"type": "chat.message"})
        print(f"\nDjango process counting 1 broker at a broker of 2: {refused.value}")
    finally:
        await layer.close()
    assert broker.stats().published == 0
