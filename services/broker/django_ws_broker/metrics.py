"""The broker's Prometheus metrics.

Shard totals are read from :class:`ShardState` at scrape time by a collector, so the
fan-out hot path pays nothing for them; latency is a histogram observed per frame.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from django_ws_broker.shard import ShardState

PUBLISH_SECONDS = Histogram(
    "django_ws_broker_publish_seconds",
    "Time for the broker to apply one batch of publishes (fan-out to edge queues).",
    buckets=(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1),
)

ACCESS_REFUSED = Counter(
    "django_ws_broker_access_refused",
    "Calls refused before reaching the servicer, by reason: unauthenticated (no or an "
    "unknown role secret), wrong_role, unknown_method, no_edge_key, edge_key_mismatch "
    "(an Attach naming an edge id its key does not derive).",
    ["reason"],
)
ACCESS_REFUSAL_REASONS = (
    "unauthenticated",
    "wrong_role",
    "unknown_method",
    "no_edge_key",
    "edge_key_mismatch",
)
for _reason in ACCESS_REFUSAL_REASONS:
    ACCESS_REFUSED.labels(reason=_reason)  # exported at 0 from the start, for rate()


class ShardCollector(Collector):
    """Exports a ShardState's totals and gauges when Prometheus scrapes."""

    def __init__(self, shard: ShardState) -> None:
        self.shard = shard

    def collect(self) -> Iterable[Metric]:
        shard = self.shard
        counters = shard.counters
        labels = ["ordinal"]
        ordinal = [str(shard.ordinal)]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric(ordinal, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=labels)
            family.add_metric(ordinal, value)
            return family

        def counter_by(name: str, doc: str, label: str, values: dict[str, float]) -> Metric:
            """One counter family with a series per value of ``label``."""
            family = CounterMetricFamily(name, doc, labels=[*labels, label])
            for key, value in values.items():
                family.add_metric([*ordinal, key], value)
            return family

        yield gauge("django_ws_broker_shards", "Shard count this broker works with.", shard.shards)
        yield gauge("django_ws_broker_edges", "Edge streams attached.", len(shard.edges))
        yield gauge(
            "django_ws_broker_groups", "Groups with at least one subscriber.", len(shard.groups)
        )
        yield gauge(
            "django_ws_broker_subscriptions",
            "Group subscriptions held (one per group per edge stream).",
            shard.subscription_count(),
        )
        yield counter(
            "django_ws_broker_published",
            "Publishes accepted (group and channel sends).",
            counters.published,
        )
        yield counter(
            "django_ws_broker_delivered", "Deliveries queued to edge streams.", counters.delivered
        )
        yield counter("django_ws_broker_refused", "Operations refused.", counters.refused)
        yield counter(
            "django_ws_broker_streams_attached",
            "Edge streams attached since start.",
            counters.streams_attached,
        )
        yield counter(
            "django_ws_broker_publish_duplicates",
            "Publishes re-sent after a reconnect that were applied already: dropped.",
            counters.duplicates,
        )
        yield counter(
            "django_ws_broker_publish_requests",
            "Unary Publish requests served (a bulk send costs one per broker).",
            counters.publish_requests,
        )
        membership = shard.membership
        yield gauge(
            "django_ws_broker_members",
            "Group members reported by edges, over all groups owned here.",
            membership.count,
        )
        yield counter_by(
            "django_ws_broker_presence_events",
            "presence.join and presence.leave events announced.",
            "kind",
            {"join": membership.joins, "leave": membership.leaves},
        )
        yield counter(
            "django_ws_broker_members_refused",
            "Member reports refused (the member limit, a foreign channel, info too large).",
            membership.refused,
        )
        yield counter_by(
            "django_ws_broker_resumes",
            "Edges asking to catch up from a position, by outcome.",
            "outcome",
            {"recovered": counters.resumed - counters.resume_lost, "lost": counters.resume_lost},
        )
        yield gauge(
            "django_ws_broker_history_bytes",
            "Bytes of group history kept for recovery.",
            shard.history.bytes,
        )
        yield counter_by(
            "django_ws_broker_dropped",
            "Deliveries dropped, by reason.",
            "reason",
            {
                "edge_queue_full": counters.dropped_queue_full,
                "no_such_channel": counters.dropped_no_channel,
                # Refusals and barrier answers that did not fit an edge stream's control
                # headroom.
                "control_queue_full": counters.dropped_control,
            },
        )
        # Totals only: a per-edge label would publish every live edge id to whoever can
        # read /metrics (ids are useless without their keys, but names of live edges
        # are still a map for an attacker, and an unbounded label set).
        depths = [edge.queue.qsize() for edge in shard.edges.values()]
        yield gauge(
            "django_ws_broker_queue_depth",
            "Deliveries waiting in all edge streams' queues together.",
            sum(depths),
        )
        yield gauge(
            "django_ws_broker_queue_depth_max",
            "Deliveries waiting in the fullest edge stream's queue (a stalled edge).",
            max(depths, default=0),
        )
