"""How a busy gRPC stream gathers operations into fewer messages, on both ends.

A gRPC stream message costs far more than a publish or a delivery: its write, the read
at the other end and a hop through each side's completion-queue thread came to a few
hundred microseconds of CPU per message in S1's profiles. So a stream that wrote less
than :data:`BUSY_WINDOW_SECONDS` ago is busy, and lets its next batch gather until the
batch's first operation has waited :data:`LINGER_SECONDS`; an idle stream writes at
once, so a lone chat message pays no added latency. The edge's links
(``django_ws_edge.links``) and the broker's streams (``django_ws_broker.servicer``)
both follow this rule, with these values, through :func:`linger_left`; a stream within
one process (the broker in an edge worker) has no message cost to spread and does not
linger. The broker also stops lingering once a full frame or half its queue's bound
waits (``EdgeStream.gather``).
"""

from __future__ import annotations

LINGER_SECONDS = 0.006
"""Going from 1 ms to 3 ms halved the messages and cut S1's server CPU by a fifth at
8,000 deliveries/s, for 3 ms more median latency under load. Going on to 6 ms cut
S1's server CPU at equal rates by another 6 to 23% (django-ws at 2,000 to 16,000/s,
Channels on the layer at 2,000 to 5,700/s, whose broker took a quarter less) and
lifted the layer's S1 maximum a ladder step in three rounds of four; S2's CPU fell by
at most 13%. django-ws' S3 maximum came out a step lower in both runs that measured
it. It costs 1 to 5 ms more median latency under load (docs/benchmarks.md, "A 6 ms
linger"); 10 ms saved 1 to 8% more for 3 to 4 ms more, and was not taken."""

BUSY_WINDOW_SECONDS = 0.001
"""A stream that wrote less than this long ago is busy. At 5 ms, a chat at 500
deliveries/s (S1) found most of its writes busy and paid both hops' linger: p50 7.3 ms
against 1.4 to 1.8 ms at 1 ms, for the same CPU; at 4,000 and 8,000/s the 1 ms window
costs about a tenth more server CPU, still less than before streams lingered 3 ms."""


def linger_left(now: float, first_queued: float, last_write: float) -> float:
    """Seconds a stream should still wait before writing the batch whose first
    operation was queued at ``first_queued`` (all three on one monotonic clock).

    The wait is counted from the batch's first operation, not from when the writer got
    to run: an event loop busy enough to have kept that operation waiting
    ``LINGER_SECONDS`` already gathered the batch, and a further fixed wait would only
    add latency where load is highest.
    """
    if now - last_write >= BUSY_WINDOW_SECONDS:
        return 0.0
    return max(0.0, first_queued + LINGER_SECONDS - now)
