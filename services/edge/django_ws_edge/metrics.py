"""The edge's Prometheus metrics, multi-process aware.

With ``-w N`` every worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
(set by the supervisor before the workers start) and the supervisor's ``/metrics``
merges them, so one scrape sees the whole server. The files are allocated before use
(:mod:`django_ws_edge.metrics_store`), so a full or read-only directory degrades metrics
instead of killing workers.

Label values never come straight from a client: a client chooses its close code, so
close codes are bucketed (:func:`close_code_label`) and the number of series stays
bounded.
"""

from __future__ import annotations

import bisect

from prometheus_client import Counter, Gauge, Histogram

from django_ws_edge.metrics_store import install

install()  # before any metric below is created

STANDARD_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015}
)
"""Close codes RFC 6455 and the IANA registry define: labelled by value."""


def close_code_label(code: int) -> str:
    """A bounded label for a close code: standard codes by value, the registered
    (3000-3999) and private (4000-4999) ranges as one label each, anything else
    "other"."""
    if code in STANDARD_CLOSE_CODES:
        return str(code)
    if 3000 <= code <= 3999:
        return "3000-3999"
    if 4000 <= code <= 4999:
        return "4000-4999"
    return "other"


def status_label(status: int) -> str:
    """A bounded label for an HTTP status an application may choose."""
    return str(status) if 100 <= status <= 599 else "other"


CONNECTIONS_OPENED = Counter("django_ws_edge_connections_opened", "Websocket connections accepted.")
CONNECTIONS_CLOSED = Counter(
    "django_ws_edge_connections_closed",
    "Websocket connections closed, by close code (3000-3999 and 4000-4999 as ranges).",
    ["code"],
)
CONNECTIONS_OPEN = Gauge(
    "django_ws_edge_connections_open",
    "Websocket connections open now.",
    multiprocess_mode="livesum",
)
HANDSHAKES_REJECTED = Counter(
    "django_ws_edge_handshakes_rejected",
    "Handshakes answered with an HTTP error, by status.",
    ["status"],
)
MESSAGES_RECEIVED = Counter(
    "django_ws_edge_messages_received", "Websocket messages received from clients."
)
MESSAGES_SENT = Counter("django_ws_edge_messages_sent", "Websocket messages sent to clients.")
GROUP_SENDS = Counter("django_ws_edge_group_sends", "group_send calls made by consumers.")
DELIVERIES = Counter(
    "django_ws_edge_deliveries", "Events handed to local consumers (group and channel)."
)
CONSUMER_ERRORS = Counter(
    "django_ws_edge_consumer_errors",
    "Consumer handlers that raised: the connection closed 1011 (or answered 500 when the "
    "handshake was still open; a raising disconnect() is counted too).",
)
KEEPALIVE_TIMEOUTS = Counter(
    "django_ws_edge_keepalive_timeouts",
    "Connections closed (1011) because a keepalive ping went unanswered for PING_TIMEOUT.",
)
SLOW_CONSUMERS_CLOSED = Counter(
    "django_ws_edge_slow_consumers_closed",
    "Connections closed because their client did not keep up (1013): too many unsent "
    "bytes, or a send that made no progress for SLOW_CLIENT_SECONDS.",
)
DELIVERIES_LOST = Counter(
    "django_ws_edge_deliveries_lost",
    "Events that did not reach a consumer, by reason: slow_client (dropped with a client "
    "closed as too slow), expired (waited past the layer's expiry), broker_lost (a gap: "
    "the broker lost the group's history, counted once per member told), "
    "history_trimmed (a gap older than the history kept, counted per event missed), "
    "receive_queue_full, undecodable.",
    ["reason"],
)
# Every reason from the start, so a dashboard shows zero rather than no data.
for _reason in (
    "slow_client",
    "expired",
    "broker_lost",
    "history_trimmed",
    "receive_queue_full",
    "undecodable",
):
    DELIVERIES_LOST.labels(_reason)
PUBLISH_RETRIED = Counter(
    "django_ws_edge_publish_resent",
    "Publishes sent again after a broker stream was re-established (not yet acknowledged).",
)
QUEUE_DROPPED = Counter(
    "django_ws_edge_receive_queue_dropped",
    "Events dropped because a new_channel() receive queue was full.",
)
LIFECYCLE_EVENTS_DROPPED = Counter(
    "django_ws_edge_lifecycle_events_dropped",
    "websocket.* events that arrived through the channel layer (forged or from an old "
    "sender): dropped before reaching the consumer.",
)
UNDECODABLE_EVENTS = Counter(
    "django_ws_edge_undecodable_events",
    "Events from the broker that could not be decoded (unknown kind, bad body): dropped.",
)
LOOP_BLOCKED = Counter(
    "django_ws_edge_loop_blocked",
    "Times a handler blocked the worker's event loop past the warning threshold.",
)
RATE_LIMITED = Counter(
    "django_ws_edge_rate_limited",
    "Connections closed (1008) for sending more messages than the rate limit allows.",
)
PUBLISH_LOST = Counter(
    "django_ws_edge_publish_lost",
    "Publishes accepted but never acknowledged by their broker: still waiting when the "
    "worker stopped.",
)
BROKER_DROPPED = Counter(
    "django_ws_edge_broker_dropped",
    "Deliveries the broker dropped for this worker because its queue was full.",
)
LINK_CONNECTS = Counter(
    "django_ws_edge_link_connects", "Broker streams established (first connects and reconnects)."
)
LINKS_UP = Gauge("django_ws_edge_links_up", "Broker streams up now.", multiprocess_mode="livesum")
LOCAL_GROUPS = Gauge(
    "django_ws_edge_local_groups",
    "Groups with members on this worker.",
    multiprocess_mode="livesum",
)
DELIVERY_LATENCY = Histogram(
    "django_ws_edge_delivery_latency_seconds",
    "Time from a sender's publish to its arrival at a receiving edge worker.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class Tally:
    """Hot-path counts kept as plain integers and added to the counters above by the
    worker every 100 ms: in multiprocess mode one counter increment costs about a
    microsecond (a locked write to a shared file), too much to pay per message."""

    __slots__ = (
        "_bounds",
        "deliveries",
        "group_sends",
        "latency_counts",
        "latency_sum",
        "received",
        "sent",
    )

    def __init__(self) -> None:
        self.deliveries = 0
        self.group_sends = 0
        self.received = 0
        self.sent = 0
        # Delivery latency, bucketed here and added to the histogram at flush. Uses the
        # histogram's per-bucket values (``_buckets``, ``_sum``), which prometheus_client
        # has kept since 0.4; tests/edge/test_tally.py pins the resulting exposition.
        self._bounds: tuple[float, ...] = tuple(DELIVERY_LATENCY._upper_bounds)
        self.latency_counts = [0] * len(self._bounds)
        self.latency_sum = 0.0

    def observe_latency(self, seconds: float) -> None:
        self.latency_sum += seconds
        self.latency_counts[bisect.bisect_left(self._bounds, seconds)] += 1

    def flush(self) -> None:
        if self.deliveries:
            DELIVERIES.inc(self.deliveries)
            self.deliveries = 0
        if self.received:
            MESSAGES_RECEIVED.inc(self.received)
            self.received = 0
        if self.sent:
            MESSAGES_SENT.inc(self.sent)
            self.sent = 0
        if self.group_sends:
            GROUP_SENDS.inc(self.group_sends)
            self.group_sends = 0
        if any(self.latency_counts):
            for bucket, count in zip(DELIVERY_LATENCY._buckets, self.latency_counts, strict=True):
                if count:
                    bucket.inc(count)
            DELIVERY_LATENCY._sum.inc(self.latency_sum)
            self.latency_counts = [0] * len(self._bounds)
            self.latency_sum = 0.0
