"""This worker's own channels: handing an event to a connection or a receive queue,
and closing the clients that do not keep up (by bytes, by the worker's budget, by time).

The connections are real ``ConnectionPort`` inboxes whose consumer never runs, as with a
client that stopped reading: their byte accounting is the one the edge uses.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from django_ws_client.connection import BufferBudget, ConnectionPort
from django_ws_client.transport.inmemory import InMemoryChannelLayer
from django_ws_edge import metrics
from django_ws_edge.local import LocalChannels

# Only the expiry of events is read from it.
LAYER = InMemoryChannelLayer(address="unix:/nowhere.sock")


class StalledConnection(ConnectionPort):
    """A connection whose client reads nothing; closing it as too slow is recorded."""

    slow_client_seconds = 30.0

    def __init__(self, name: str, max_pending_bytes: int = 1000) -> None:
        super().__init__(channel_name=name, layer=LAYER, capacity=10)
        self.max_pending_bytes = max_pending_bytes
        self.closed_as_slow: list[str] = []

    def close_slow(self, why: str) -> None:
        self.discard_pending()
        self.closed_as_slow.append(why)

    async def accept(self, subprotocol: Any = None, headers: Any = None) -> None:
        self.accepted = True

    async def send(self, data: str | bytes) -> None:
        raise AssertionError("nothing is sent in these tests")

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.close_requested = True

    async def fail_handshake(self, status: int) -> None:
        self.rejected = True

    async def leave_all_groups(self) -> None:
        pass


def event(n: int) -> dict[str, Any]:
    return {"type": "chat.message", "n": n}


def queue_dropped() -> float:
    return REGISTRY.get_sample_value("django_ws_edge_receive_queue_dropped_total") or 0


async def test_a_full_receive_queue_refuses_and_counts_while_a_gone_channel_does_not() -> None:
    local = LocalChannels(capacity=2, tally=metrics.Tally())
    local.new_queue("ws.e!specific.q")
    before = queue_dropped()
    assert [local.deliver("ws.e!specific.q", event(n)) for n in range(3)] == [True, True, False]
    assert queue_dropped() - before == 1
    assert await local.receive("ws.e!specific.q") == event(0)
    assert local.deliver("ws.e!gone", event(0)) is True  # as in Channels: not the sender's error
    assert local.holds("ws.e!specific.q") and not local.holds("ws.e!gone")
    with pytest.raises(ValueError, match="new_channel"):
        await local.receive("ws.e!gone")


def test_a_client_past_its_own_bound_is_closed_and_its_backlog_dropped() -> None:
    local = LocalChannels(capacity=10, tally=metrics.Tally())
    slow, fine = StalledConnection("ws.e!slow"), StalledConnection("ws.e!fine")
    local.register(slow)
    local.register(fine)
    for n in range(3):
        local.deliver("ws.e!slow", event(n), 400)
    local.deliver("ws.e!fine", event(0), 400)
    print(f"\nclosed as too slow: {slow.closed_as_slow}")
    assert slow.closed_as_slow == ["1200 bytes of events wait for it (SLOW_CLIENT_BYTES is 1000)"]
    assert slow.pending_bytes == 0 and fine.pending_bytes == 400
    assert fine.closed_as_slow == []
    assert local.tally.deliveries == 4


def test_when_the_worker_budget_is_spent_the_client_furthest_behind_gives_way() -> None:
    local = LocalChannels(capacity=10, tally=metrics.Tally())
    budget = BufferBudget(1000)
    behind, other = StalledConnection("ws.e!behind"), StalledConnection("ws.e!other")
    for connection in (behind, other):
        connection.budget = budget
        local.register(connection)
    local.budget = budget
    local.deliver("ws.e!behind", event(0), 700)
    local.deliver("ws.e!other", event(1), 400)  # within its own bound, past the worker's
    assert other.closed_as_slow == []
    assert len(behind.closed_as_slow) == 1
    assert "the most of any client" in behind.closed_as_slow[0]
    assert budget.used == 400


def test_a_send_that_makes_no_progress_closes_its_client_in_time() -> None:
    local = LocalChannels(capacity=10, tally=metrics.Tally())
    stuck = StalledConnection("ws.e!stuck")
    local.register(stuck)
    local.blocked_sends[stuck] = 100.0
    local.close_stalled(now=129.0)
    assert stuck.closed_as_slow == []
    local.close_stalled(now=131.0)
    assert stuck.closed_as_slow == ["a send made no progress for 30s (SLOW_CLIENT_SECONDS)"]
    assert stuck not in local.blocked_sends
