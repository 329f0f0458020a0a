"""Write the chart's Grafana dashboards (edge.json, broker.json) from code.

The panels are declared here with grafana-foundation-sdk builders, so the JSON
always has Grafana's shape and the queries are easy to review. Run it after
changing a panel (``pip install -e '.[deploy]'`` first)::

    python helm/django-ws-grpc/dashboards/generate.py

``--check`` exits 1 when the committed JSON differs from what the code gives.
Queries use only the metrics declared in the services' ``metrics.py``; the
tests in ``tests/deploy`` hold them to that.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

HERE = Path(__file__).resolve().parent
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
NS = 'namespace=~"$namespace"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Graph:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]


def quantiles(bucket: str, by: str = "") -> tuple[Query, ...]:
    """p50, p95 and p99 of a histogram, summed over pods (optionally kept by a label)."""
    keep = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({keep}) (rate({bucket}{{{NS}}}[{RATE}])))",
            f"p{round(q * 100)}{suffix}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def rate(metric: str, by: str, legend: str) -> Query:
    return Query(f"sum by ({by}) (rate({metric}{{{NS}}}[{RATE}]))", legend)


EDGE_ROWS: dict[str, list[Graph]] = {
    "Connections": [
        Graph("Open websockets", "Connections open now, per edge pod.", "short",
              (Query(f"sum by (pod) (django_ws_edge_connections_open{{{NS}}})", "{{pod}}"),)),
        Graph("Connects and closes", "Accepted connections, and closes by close code.", "ops",
              (Query(f"sum(rate(django_ws_edge_connections_opened_total{{{NS}}}[{RATE}]))",
                     "opened"),
               rate("django_ws_edge_connections_closed_total", "code", "closed {{code}}"))),
        Graph("Handshakes rejected", "Handshakes answered with an HTTP error, by status.",
              "ops", (rate("django_ws_edge_handshakes_rejected_total", "status", "{{status}}"),)),
        Graph("Slow clients and errors",
              "Connections closed because their client did not keep up (1013), consumer "
              "handlers that raised (1011), and clients that left a keepalive ping "
              "unanswered for PING_TIMEOUT (1011).", "ops",
              (Query(f"sum(rate(django_ws_edge_slow_consumers_closed_total{{{NS}}}[{RATE}]))",
                     "slow consumer closed"),
               Query(f"sum(rate(django_ws_edge_consumer_errors_total{{{NS}}}[{RATE}]))",
                     "consumer error"),
               Query(f"sum(rate(django_ws_edge_keepalive_timeouts_total{{{NS}}}[{RATE}]))",
                     "keepalive timeout"))),
    ],
    "Messages": [
        Graph("Websocket messages", "Messages received from and sent to clients.", "ops",
              (Query(f"sum(rate(django_ws_edge_messages_received_total{{{NS}}}[{RATE}]))",
                     "received"),
               Query(f"sum(rate(django_ws_edge_messages_sent_total{{{NS}}}[{RATE}]))", "sent"))),
        Graph("Group sends and deliveries",
              "group_send calls by consumers, and events handed to local consumers.", "ops",
              (Query(f"sum(rate(django_ws_edge_group_sends_total{{{NS}}}[{RATE}]))",
                     "group sends"),
               Query(f"sum(rate(django_ws_edge_deliveries_total{{{NS}}}[{RATE}]))",
                     "deliveries"))),
        Graph("Delivery latency", "From a sender's publish to arrival at a receiving edge "
              "worker.", "s", quantiles("django_ws_edge_delivery_latency_seconds_bucket")),
        Graph("Deliveries lost, by reason",
              "Events that never reached a consumer: slow_client (dropped with a client "
              "closed as too slow), expired, broker_lost (a member told of a gap after a "
              "broker lost its history), history_trimmed, receive_queue_full, undecodable.",
              "ops", (rate("django_ws_edge_deliveries_lost_total", "reason", "{{reason}}"),)),
        Graph("Local groups", "Groups with members on each edge pod.", "short",
              (Query(f"sum by (pod) (django_ws_edge_local_groups{{{NS}}})", "{{pod}}"),)),
    ],
    "Broker links": [
        Graph("Broker streams up", "Streams from each edge pod's workers to the brokers.",
              "short", (Query(f"sum by (pod) (django_ws_edge_links_up{{{NS}}})", "{{pod}}"),)),
        Graph("Broker stream connects", "Streams established; a steady rate means reconnects.",
              "ops", (rate("django_ws_edge_link_connects_total", "pod", "{{pod}}"),)),
        Graph("Lost, resent and dropped", "Publishes never acknowledged before a worker "
              "stopped, publishes sent again after a broker stream came back, deliveries the "
              "broker dropped because a worker's queue was full (filled again from history "
              "where it can), and events dropped because a new_channel() receive queue was "
              "full.", "ops",
              (Query(f"sum(rate(django_ws_edge_publish_lost_total{{{NS}}}[{RATE}]))",
                     "publish lost"),
               Query(f"sum(rate(django_ws_edge_publish_resent_total{{{NS}}}[{RATE}]))",
                     "publish resent"),
               Query(f"sum(rate(django_ws_edge_broker_dropped_total{{{NS}}}[{RATE}]))",
                     "broker dropped"),
               Query(f"sum(rate(django_ws_edge_receive_queue_dropped_total{{{NS}}}[{RATE}]))",
                     "receive queue dropped"))),
    ],
}

BROKER_ROWS: dict[str, list[Graph]] = {
    "Shards": [
        Graph("Edge streams", "Edge worker streams attached to each shard.", "short",
              (Query(f"sum by (ordinal) (django_ws_broker_edges{{{NS}}})", "shard {{ordinal}}"),)),
        Graph("Groups", "Groups with at least one subscriber, per shard.", "short",
              (Query(f"sum by (ordinal) (django_ws_broker_groups{{{NS}}})",
                     "shard {{ordinal}}"),)),
        Graph("Subscriptions", "Group subscriptions held (one per group per edge stream).",
              "short", (Query(f"sum by (ordinal) (django_ws_broker_subscriptions{{{NS}}})",
                              "shard {{ordinal}}"),)),
        Graph("Shard count", "The shard count each broker works with: they must agree.",
              "short", (Query(f"max by (ordinal) (django_ws_broker_shards{{{NS}}})",
                              "shard {{ordinal}}"),)),
    ],
    "Traffic": [
        Graph("Publishes", "Publishes accepted (group and channel sends), per shard.", "ops",
              (rate("django_ws_broker_published_total", "ordinal", "shard {{ordinal}}"),)),
        Graph("Deliveries", "Deliveries queued to edge streams, per shard.", "ops",
              (rate("django_ws_broker_delivered_total", "ordinal", "shard {{ordinal}}"),)),
        Graph("Publish latency", "Time to apply one batch of publishes (fan-out to edge "
              "queues).", "s", quantiles("django_ws_broker_publish_seconds_bucket")),
        Graph("Streams attached", "Edge streams attached; a steady rate means reconnects.",
              "ops", (rate("django_ws_broker_streams_attached_total", "ordinal",
                           "shard {{ordinal}}"),)),
    ],
    "Members and presence": [
        Graph("Members", "Group members reported by edges, per shard (the owner's copy "
              "that answers counts, member lists and presence).", "short",
              (Query(f"sum by (ordinal) (django_ws_broker_members{{{NS}}})",
                     "shard {{ordinal}}"),)),
        Graph("Presence events", "presence.join and presence.leave events announced, and "
              "member reports refused (the member limit).", "ops",
              (rate("django_ws_broker_presence_events_total", "ordinal, kind",
                    "shard {{ordinal}} {{kind}}"),
               rate("django_ws_broker_members_refused_total", "ordinal",
                    "shard {{ordinal}} refused"))),
        Graph("Publish requests", "Unary Publish requests from plain Django processes (a "
              "bulk send is one per broker).", "ops",
              (rate("django_ws_broker_publish_requests_total", "ordinal",
                    "shard {{ordinal}}"),)),
    ],
    "Backpressure": [
        Graph("Dropped deliveries", "Deliveries dropped, by shard and reason.", "ops",
              (rate("django_ws_broker_dropped_total", "ordinal, reason",
                    "shard {{ordinal}} {{reason}}"),)),
        Graph("Refused operations", "Operations refused: invalid names, groups owned by "
              "another shard, subscription limits.", "ops",
              (rate("django_ws_broker_refused_total", "ordinal", "shard {{ordinal}}"),)),
        Graph("Duplicates and recovery",
              "Publishes re-sent after a reconnect that the broker had applied already "
              "(dropped as duplicates), and resumes answered from history or lost (the "
              "position was older than the history, or from a lost epoch).", "ops",
              (rate("django_ws_broker_publish_duplicates_total", "ordinal",
                    "shard {{ordinal}} duplicates"),
               rate("django_ws_broker_resumes_total", "ordinal, outcome",
                    "shard {{ordinal}} {{outcome}}"))),
        Graph("History", "Bytes of group history kept for recovery, per shard.", "bytes",
              (Query(f"sum by (ordinal) (django_ws_broker_history_bytes{{{NS}}})",
                     "shard {{ordinal}}"),)),
        Graph("Deepest edge queue", "Deliveries waiting in the fullest edge stream queue.",
              "short", (Query(f"max by (ordinal) (django_ws_broker_queue_depth_max{{{NS}}})",
                              "shard {{ordinal}}"),)),
        Graph("Refused calls", "Calls refused before the servicer: missing or wrong role "
              "secrets, and Attach streams naming an edge id their key does not derive.",
              "ops", (rate("django_ws_broker_access_refused_total", "reason", "{{reason}}"),)),
    ],
}


def panel(graph: Graph) -> timeseries.Panel:
    built = (
        timeseries.Panel()
        .title(graph.title)
        .description(graph.description)
        .datasource(DATASOURCE)
        .unit(graph.unit)
        .min(0)
        .height(8)
        .span(12)
    )
    for query in graph.queries:
        built = built.with_target(
            prometheus.Dataquery().expr(query.expr).legend_format(query.legend)
        )
    return built


def build(uid: str, title: str, description: str, namespace_metric: str,
          rows: dict[str, list[Graph]]) -> dict[str, Any]:
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["django-ws"])
        .refresh("30s")
        .time("now-1h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source")
                       .type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("namespace")
            .label("Namespace")
            .datasource(DATASOURCE)
            .query(f"label_values({namespace_metric}, namespace)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    for row_title, graphs in rows.items():
        board = board.with_row(dashboard.Row(row_title))
        for graph in graphs:
            board = board.with_panel(panel(graph))
    return tidy(json.loads(json.dumps(board.build(), cls=JSONEncoder)))


def tidy(board: dict[str, Any]) -> dict[str, Any]:
    """Give panels distinct ids and queries their ref ids, and drop null options
    (the builders leave them unset), as Grafana's own exports have them."""
    board["annotations"] = {"list": []}
    for number, item in enumerate(board["panels"], start=1):
        item["id"] = number
        if item.get("options") is None:
            item.pop("options", None)
        for index, target in enumerate(item.get("targets", [])):
            target["refId"] = chr(ord("A") + index)
    return board


DASHBOARDS = {
    "edge.json": lambda: build(
        "django-ws-edge", "django-ws / Edge",
        "Websocket edge pods: connections, messages, delivery latency and broker links.",
        "django_ws_edge_connections_open", EDGE_ROWS,
    ),
    "broker.json": lambda: build(
        "django-ws-broker", "django-ws / Broker",
        "Broker shards: subscriptions, publish and delivery rates, latency, backpressure.",
        "django_ws_broker_edges", BROKER_ROWS,
    ),
}


def render(make: Any) -> str:
    return json.dumps(make(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for name, make in DASHBOARDS.items():
        path = HERE / name
        text = render(make)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
