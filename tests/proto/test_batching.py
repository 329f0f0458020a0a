"""The linger rule both ends of a broker stream follow (django_ws_proto.batching)."""

from __future__ import annotations

import pytest

from django_ws_proto.batching import BUSY_WINDOW_SECONDS, LINGER_SECONDS, linger_left


def test_an_idle_stream_writes_at_once() -> None:
    now = 100.0
    # Nothing written for longer than the busy window: a lone message goes out now.
    assert linger_left(now, first_queued=now, last_write=now - 2 * BUSY_WINDOW_SECONDS) == 0.0
    assert linger_left(now, first_queued=now, last_write=0.0) == 0.0


def test_a_busy_stream_waits_until_its_batch_is_linger_old() -> None:
    now = 100.0
    last_write = now - BUSY_WINDOW_SECONDS / 2
    assert linger_left(now, first_queued=now, last_write=last_write) == pytest.approx(
        LINGER_SECONDS
    )
    # The first operation has waited a third of the linger: two thirds are left.
    waited = LINGER_SECONDS / 3
    assert linger_left(now, now - waited, last_write) == pytest.approx(LINGER_SECONDS - waited)


def test_a_batch_kept_waiting_by_a_busy_loop_is_written_without_more_delay() -> None:
    now = 100.0
    last_write = now - BUSY_WINDOW_SECONDS / 2
    # The loop took longer than the linger to get to the writer: the batch has gathered.
    assert linger_left(now, now - LINGER_SECONDS, last_write) == 0.0
    assert linger_left(now, now - 10 * LINGER_SECONDS, last_write) == 0.0
