"""Group delivery at the edge, without brokers or sockets: in order, once, or a gap.

``GroupDelivery`` is fed deliveries and answers as a broker's frames would carry them;
what it hands on (per channel) and the history it asks for are recorded and checked.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from django_ws_client.connection import Position
from django_ws_edge.delivery import GroupDelivery
from django_ws_edge.group_index import GroupIndex
from django_ws_proto import codec
from django_ws_proto.v1 import broker_pb2

EPOCH = 0x3F2A


class Worker:
    """The delivery's surroundings: a membership index and what it hands on."""

    def __init__(self, *members: str, group: str = "room") -> None:
        self.index = GroupIndex()
        for channel in members:
            self.index.add(group, channel)
        self.received: dict[str, list[tuple[Any, Position | None]]] = {}
        self.resumes: list[tuple[broker_pb2.Resume, bool]] = []
        self.controls: list[tuple[str, str, dict[str, Any]]] = []
        self.delivery = GroupDelivery(
            self.index,
            deliver=self._deliver,
            send_resume=lambda resume, retry: self.resumes.append((resume, retry)),
            apply_control=lambda channel, d: self.controls.append((channel, d.type, d.body)),
        )

    def _deliver(self, channel: str, event: Any, size: int, position: Position | None) -> bool:
        self.received.setdefault(channel, []).append((event, position))
        return True

    def texts(self, channel: str) -> list[str]:
        """What ``channel`` received: message texts, and ``gap:<reason>`` for gaps."""
        return [
            event["text"] if "text" in event else f"gap:{event['reason']}"
            for event, _ in self.received.get(channel, [])
        ]


def message(
    offset: int, *, group: str = "room", epoch: int = EPOCH, exclude: tuple[str, ...] = ()
) -> broker_pb2.Delivery:
    return broker_pb2.Delivery(
        group=group,
        event=codec.encode_dict_event({"type": "chat.message", "text": f"m{offset}"}),
        epoch=epoch,
        offset=offset,
        exclude=exclude,
    )


def answer(
    request: int,
    offset: int,
    deliveries: list[broker_pb2.Delivery] | None = None,
    *,
    epoch: int = EPOCH,
    lost: str = "",
    group: str = "room",
) -> broker_pb2.Recovered:
    return broker_pb2.Recovered(
        request=request,
        group=group,
        epoch=epoch,
        offset=offset,
        deliveries=deliveries or [],
        lost=lost,
    )


def lost(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("django_ws_edge_deliveries_lost_total", {"reason": reason}) or 0
    )


def test_each_member_gets_each_message_once_in_join_order_with_its_own_copy() -> None:
    worker = Worker("c1", "c2")
    for offset in (1, 2, 2, 1, 3):  # 2 and 1 again: a catch-up overlapped the stream
        worker.delivery.on_delivery(message(offset))
    assert worker.texts("c1") == worker.texts("c2") == ["m1", "m2", "m3"]
    assert worker.delivery.cursors["room"] == [EPOCH, 3]
    first, second = worker.received["c1"][0][0], worker.received["c2"][0][0]
    assert first == second and first is not second
    assert worker.received["c1"][2][1] == ("room", EPOCH, 3)
    assert worker.resumes == []


def test_a_gap_is_filled_from_history_before_anything_newer_is_handed_on() -> None:
    worker = Worker("c1")
    worker.delivery.on_delivery(message(1))
    worker.delivery.on_delivery(message(2))
    worker.delivery.on_delivery(message(5))  # 3 and 4 were dropped by a full queue
    worker.delivery.on_delivery(message(6))
    assert worker.texts("c1") == ["m1", "m2"]
    [(resume, retry)] = worker.resumes
    assert (resume.group, resume.epoch, resume.offset, retry) == ("room", EPOCH, 2, False)
    worker.delivery.on_recovered(answer(resume.request, 4, [message(3), message(4)]))
    print(f"\nafter the gap was filled: {worker.texts('c1')}")
    assert worker.texts("c1") == ["m1", "m2", "m3", "m4", "m5", "m6"]
    assert worker.delivery.cursors["room"] == [EPOCH, 6]


def test_history_lost_gives_members_a_gap_event_then_the_new_epoch() -> None:
    worker = Worker("c1", "c2")
    worker.delivery.on_delivery(message(1))
    [resume] = worker.delivery.resumes({"room"}, frozenset())  # a reconnect
    assert (resume.epoch, resume.offset) == (EPOCH, 1)
    before = lost("broker_lost")
    new_epoch = [message(1, epoch=7), message(2, epoch=7)]
    worker.delivery.on_recovered(answer(resume.request, 2, new_epoch, epoch=7, lost="epoch"))
    assert worker.texts("c1") == worker.texts("c2") == ["m1", "gap:history_lost", "m1", "m2"]
    assert worker.received["c1"][1][1] == ("room", 7, 0)  # the position before the replay
    assert lost("broker_lost") - before == 2
    assert worker.delivery.cursors["room"] == [7, 2]


def test_a_member_catching_up_gets_its_history_then_what_arrived_meanwhile() -> None:
    worker = Worker("c1")
    worker.delivery.on_delivery(message(3))
    worker.index.add("room", "late")
    request = worker.delivery.request("room", own=False, member="late")
    worker.delivery.on_delivery(message(4))  # live, while the member's answer is on its way
    assert worker.texts("late") == []
    worker.delivery.on_recovered(answer(request, 3, [message(2), message(3)]))
    assert worker.texts("c1") == ["m3", "m4"]
    assert worker.texts("late") == ["m2", "m3", "m4"]
    worker.delivery.on_delivery(message(5))
    assert worker.texts("late")[-1] == "m5"


def test_a_member_whose_position_is_too_old_is_told_so() -> None:
    worker = Worker("c1")
    request = worker.delivery.request("room", own=False, member="c1")
    before = lost("history_trimmed")
    worker.delivery.on_recovered(answer(request, 9, lost="trimmed"))
    assert worker.texts("c1") == ["gap:too_old"]
    assert lost("history_trimmed") - before == 1


def test_a_position_from_a_client_is_never_trusted() -> None:
    worker = Worker("c1")
    assert worker.delivery.position_or_gap("room", "c1", "not-a-position") is None
    assert worker.texts("c1") == ["gap:history_lost"]
    assert worker.delivery.position_or_gap("room", "c1", "3f2a.17") == (EPOCH, 17)


def test_a_member_that_leaves_while_catching_up_gets_nothing() -> None:
    worker = Worker("c1")
    request = worker.delivery.request("room", own=False, member="c1")
    worker.delivery.forget_channel("c1")
    worker.index.remove_channel("c1")
    worker.delivery.on_recovered(answer(request, 2, [message(1), message(2)]))
    assert worker.texts("c1") == []


def test_excluded_lifecycle_and_undecodable_events_are_not_handed_on() -> None:
    worker = Worker("c1", "c2")
    worker.delivery.on_delivery(message(1, exclude=("c1",)))
    forged = broker_pb2.Delivery(
        group="room",
        event=codec.encode_dict_event({"type": "websocket.disconnect", "code": 1000}),
        epoch=EPOCH,
        offset=2,
    )
    broken = broker_pb2.Delivery(
        group="room",
        event=broker_pb2.Event(type="x", kind=codec.DICT, body=b"{not json"),
        epoch=EPOCH,
        offset=3,
    )
    worker.delivery.on_delivery(forged)
    worker.delivery.on_delivery(broken)
    worker.delivery.on_delivery(message(4))
    assert worker.texts("c1") == ["m4"]
    assert worker.texts("c2") == ["m1", "m4"]
    assert worker.resumes == []  # skipped messages still move the cursor: no gap


def test_channel_messages_and_control_events_go_to_their_channel() -> None:
    worker = Worker()
    worker.delivery.on_delivery(
        broker_pb2.Delivery(
            channel="ws.e!c9", event=codec.encode_dict_event({"type": "t", "text": "direct"})
        )
    )
    worker.delivery.on_delivery(
        broker_pb2.Delivery(channel="ws.e!c9", event=codec.encode_control("group_add", "room"))
    )
    assert worker.texts("ws.e!c9") == ["direct"]
    assert worker.controls == [("ws.e!c9", "group_add", {"group": "room"})]


def test_a_reconnect_resumes_each_owned_group_from_its_cursor() -> None:
    worker = Worker("c1")
    worker.index.add("other", "c1")
    worker.delivery.on_delivery(message(4))
    resumes = {r.group: r for r in worker.delivery.resumes({"room", "other"}, frozenset())}
    assert (resumes["room"].epoch, resumes["room"].offset) == (EPOCH, 4)
    assert (resumes["other"].epoch, resumes["other"].offset) == (0, 0)
    assert resumes["room"].request != resumes["other"].request
    # Groups already in the hello are not asked for again.
    assert worker.delivery.resumes({"room", "other"}, frozenset({"room", "other"})) == []
    # A left group is forgotten: it starts afresh if joined again.
    worker.delivery.forget_group("room")
    assert "room" not in worker.delivery.cursors
