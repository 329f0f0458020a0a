"""The edge's Prometheus metrics, multi-process aware.

With ``-w N`` every worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
(set by the supervisor before the workers start) and the supervisor's ``/metrics``
merges them, so one scrape sees the whole server.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS_OPENED = Counter("django_ws_edge_connections_opened", "Websocket connections accepted.")
CONNECTIONS_CLOSED = Counter(
    "django_ws_edge_connections_closed", "Websocket connections closed, by close code.", ["code"]
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
    "django_ws_edge_consumer_errors", "Consumer handlers that raised (connection closed 1011)."
)
SLOW_CONSUMERS_CLOSED = Counter(
    "django_ws_edge_slow_consumers_closed",
    "Connections closed because their inbox overflowed (1013).",
)
QUEUE_DROPPED = Counter(
    "django_ws_edge_receive_queue_dropped",
    "Events dropped because a new_channel() receive queue was full.",
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
    "django_ws_edge_publish_lost", "Publishes accepted locally but lost with a broker link."
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
