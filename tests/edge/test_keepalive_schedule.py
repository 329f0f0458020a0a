"""The worker-wide keepalive schedule, fed times by hand: who is pinged when, and who
is closed for a pong that did not come."""

from __future__ import annotations

import weakref

import pytest

from django_ws_edge.keepalive import RESOLUTION, KeepaliveSchedule


class Client:
    """A connection as the schedule sees it; ``answers`` says whether pongs come."""

    def __init__(self, name: str, *, answers: bool = True) -> None:
        self.name = name
        self.answers = answers
        self.open = True
        self.pinged_at: list[float] = []
        self.unanswered: set[bytes] = set()
        self.failed = False
        self.now = 0.0

    def send_keepalive_ping(self) -> bytes | None:
        if not self.open:
            return None
        payload = f"{self.name}:{len(self.pinged_at)}".encode()
        self.pinged_at.append(self.now)
        if not self.answers:
            self.unanswered.add(payload)
        return payload

    def awaits_pong(self, payload: bytes) -> bool:
        return self.open and payload in self.unanswered

    def fail_keepalive(self) -> None:
        self.failed = True
        self.open = False


def run(schedule: KeepaliveSchedule, clients: list[Client], until: float, step: float) -> None:
    now = 0.0
    while now <= until + 1e-9:
        for client in clients:
            client.now = now
        schedule.run_due(now)
        now = round(now + step, 6)


def test_each_connection_is_pinged_once_per_interval_from_when_it_opened() -> None:
    schedule = KeepaliveSchedule(interval=20, timeout=20)
    early, late = Client("early"), Client("late")
    schedule.add(early, 0.0)
    schedule.add(late, 7.0)
    run(schedule, [early, late], until=100, step=1)
    print(f"\npinged at: early {early.pinged_at}, late {late.pinged_at}")
    assert early.pinged_at == [20, 40, 60, 80, 100]
    assert late.pinged_at == [27, 47, 67, 87]
    assert not early.failed and not late.failed
    assert schedule.pings_sent == 9 and schedule.timeouts == 0
    assert schedule.next_due() == 107  # late's next ping; answered pongs are skipped


def test_a_connection_that_does_not_answer_is_closed_once_the_timeout_passes() -> None:
    schedule = KeepaliveSchedule(interval=10, timeout=5)
    silent, talking = Client("silent", answers=False), Client("talking")
    schedule.add(silent, 0.0)
    schedule.add(talking, 0.0)
    run(schedule, [silent, talking], until=14, step=1)
    assert not silent.failed  # pinged at 10, the pong is due at 15
    run_from = 15.0
    for client in (silent, talking):
        client.now = run_from
    schedule.run_due(run_from)
    assert silent.failed and not talking.failed
    assert schedule.timeouts == 1
    # The closed connection leaves the schedule at its next turn; the other stays.
    run(schedule, [silent, talking], until=40, step=1)
    assert silent.pinged_at == [10]
    assert talking.pinged_at == [10, 20, 30, 40]
    assert len(schedule) == 1


def test_without_a_timeout_pings_go_out_and_nobody_is_closed() -> None:
    schedule = KeepaliveSchedule(interval=1, timeout=None)
    silent = Client("silent", answers=False)
    schedule.add(silent, 0.0)
    run(schedule, [silent], until=10, step=0.5)
    assert len(silent.pinged_at) == 10 and not silent.failed


def test_a_closed_connection_leaves_the_schedule_without_being_pinged() -> None:
    schedule = KeepaliveSchedule(interval=1, timeout=1)
    gone = Client("gone")
    schedule.add(gone, 0.0)
    gone.open = False
    schedule.run_due(1.0)
    assert gone.pinged_at == [] and len(schedule) == 0 and schedule.next_due() is None


def test_the_schedule_does_not_keep_a_dropped_connection_alive() -> None:
    schedule = KeepaliveSchedule(interval=1, timeout=1)
    dropped, kept = Client("dropped"), Client("kept")
    schedule.add(dropped, 0.0)
    schedule.add(kept, 0.0)
    freed = weakref.ref(dropped)
    del dropped
    assert freed() is None  # nothing but the schedule referred to it
    kept.now = 1.0
    schedule.run_due(1.0)
    assert kept.pinged_at == [1.0] and len(schedule) == 1


@pytest.mark.parametrize(("interval", "timeout"), [(0, 1), (-1, 1), (1, 0), (1, -2)])
def test_nonsense_intervals_are_refused(interval: float, timeout: float) -> None:
    with pytest.raises(ValueError, match="ping"):
        KeepaliveSchedule(interval, timeout)


def test_connections_opening_together_share_a_batch_and_are_pinged_together() -> None:
    """One batch per RESOLUTION: a connection is pinged at most that much early."""
    schedule = KeepaliveSchedule(interval=20, timeout=20)
    first, close_behind, later = Client("first"), Client("close"), Client("later")
    schedule.add(first, 0.0)
    schedule.add(close_behind, RESOLUTION / 2)
    schedule.add(later, RESOLUTION * 2)
    assert len(schedule._pings) == 2 and len(schedule) == 3
    for client in (first, close_behind, later):
        client.now = 20.0
    schedule.run_due(20.0)
    assert first.pinged_at == [20.0] and close_behind.pinged_at == [20.0]
    assert later.pinged_at == []
    assert schedule.next_due() == 20.0 + RESOLUTION * 2


def test_a_connection_whose_ping_fails_leaves_alone() -> None:
    class Broken(Client):
        def send_keepalive_ping(self) -> bytes | None:
            raise OSError("the transport is gone")

    schedule = KeepaliveSchedule(interval=1, timeout=1)
    before, broken, after = Client("before"), Broken("broken"), Client("after")
    for client in (before, broken, after):
        schedule.add(client, 0.0)
    run(schedule, [before, broken, after], until=3, step=1)
    assert before.pinged_at == [1, 2, 3] and after.pinged_at == [1, 2, 3]
    assert len(schedule) == 2


def test_a_connection_joining_a_batch_with_pongs_pending_is_checked_right() -> None:
    """A connection that opens just after a batch was pinged joins that batch for its
    next ping; the pongs of the batch are still checked against the pings they answer."""
    schedule = KeepaliveSchedule(interval=10, timeout=5)
    silent, newcomer = Client("silent", answers=False), Client("newcomer")
    schedule.add(silent, 0.0)
    silent.now = 10.0
    schedule.run_due(10.0)  # silent pinged, back in a batch due at 20, pong due at 15
    schedule.add(newcomer, 10.0 + RESOLUTION / 2)  # joins the batch due at 20
    for client in (silent, newcomer):
        client.now = 15.0
    schedule.run_due(15.0)
    assert silent.failed and not newcomer.failed and schedule.timeouts == 1
    newcomer.now = 20.0
    schedule.run_due(20.0)
    assert newcomer.pinged_at == [20.0]
