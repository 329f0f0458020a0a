"""Health and metrics of running processes: what probes and dashboards rely on."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from django_ws_broker.reshard import reshard
from django_ws_client.transport.config import DEFAULT_CAPACITY
from django_ws_proto import codec
from django_ws_proto.v1 import broker_pb2, broker_pb2_grpc

from support.accounts import make_users
from support.clients import join
from support.processes import Stack, free_port, wait_until

pytestmark = pytest.mark.timeout(90)


def health(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError as exc:
            return str(exc.code())  # type: ignore[attr-defined]
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_broker_health_is_serving_then_not_serving_while_it_drains(stack: Stack) -> None:
    broker = stack.broker(None, "--drain-seconds", "3")
    assert health(broker.listen) == "SERVING"
    with grpc.insecure_channel(broker.listen) as channel:
        named = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="django_ws.v1.Broker"), timeout=1
        )
    assert named.status == health_pb2.HealthCheckResponse.SERVING
    broker.signal(signal.SIGTERM)
    wait_until(lambda: health(broker.listen) == "NOT_SERVING", 2, "NOT_SERVING after SIGTERM")
    assert broker.alive()  # still draining, still answering
    assert broker.wait(10) == 0


def scrape(url: str) -> tuple[str, set[str]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    names = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    return text, names


TESTS = Path(__file__).resolve().parents[1]

Reading = dict[str, dict[tuple[tuple[str, str], ...], float]]


def reading(text: str) -> Reading:
    """Series name -> {labels: value}, from one scrape."""
    found: Reading = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


# Dashboard series that plain traffic and the faults driven below cannot move, each with
# why, and the test that moves it (checked to name the series, so the list stays true).
ONLY_ON_OTHER_FAULTS = {
    "django_ws_edge_slow_consumers_closed_total": (
        "a client that stops reading",
        "robustness/test_edge_slow_client.py",
    ),
    "django_ws_edge_publish_lost_total": (
        "a worker stopping with publishes its broker never acknowledged",
        "robustness/test_soak.py",
    ),
    "django_ws_broker_access_refused_total": (
        "a caller without the role's secret",
        "e2e/test_broker_roles.py",
    ),
    "django_ws_edge_keepalive_timeouts_total": (
        "a client that stops answering pings",
        "e2e/test_keepalive_pings.py",
    ),
}


def moved(series: str, readings: list[Reading]) -> bool:
    """Whether any scrape shows ``series`` with other values than the first scrape."""
    first = readings[0].get(series, {})
    return any(later.get(series, {}) != first for later in readings[1:])


async def test_every_dashboard_series_moves_under_traffic_and_faults(
    stack: Stack, tmp_path: Path
) -> None:
    """Scrapes before, during and after traffic, a broker crash and a reshard: each series
    a dashboard charts must change, so a panel that would stay flat fails here."""
    pytest.importorskip("grafana_foundation_sdk", reason="pip install -e '.[deploy]'")
    from deploy.dashboards import all_queries
    from deploy.promql import metric_names

    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    # A short queue, so the stalled workers below overflow it; groups of at most two
    # members, so a third is refused.
    broker_args = (
        *("--metrics", f"127.0.0.1:{metrics_port}", "--queue-size", "50"),
        *("--max-group-members", "2"),
    )
    broker = stack.broker(None, *broker_args)
    broker_scrapes = [reading(scrape(metrics_url)[0])]  # before any edge
    edge = stack.edge(workers=2, broker=broker.listen)
    edge_url = f"http://127.0.0.1:{edge.health_port}/metrics"
    edge_scrapes = [reading(scrape(edge_url)[0])]  # links up, no traffic

    # Traffic: connections opened and closed with a code, messages both ways, group
    # sends and deliveries, a rejected handshake, a consumer that raises.
    a, _ = await join(f"{edge.ws_url}/ws/group/observed/")
    b, _ = await join(f"{edge.ws_url}/ws/group/observed/")
    await a.send(json.dumps({"text": "measured"}))
    for ws in (a, b):
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["text"] == "measured"
    with pytest.raises(InvalidStatus):
        await connect(f"{edge.ws_url}/ws/nowhere/")
    raising = await connect(f"{edge.ws_url}/ws/raise/receive/")
    await raising.send("boom")
    await asyncio.wait_for(raising.wait_closed(), 5)
    assert raising.close_code == 1011
    await asyncio.sleep(0.3)  # the workers add their tallies to the counters every 100 ms
    edge_text, edge_names = scrape(edge_url)
    broker_text, broker_names = scrape(metrics_url)
    edge_scrapes.append(reading(edge_text))
    broker_scrapes.append(reading(broker_text))
    used = sorted({name for _, expr in all_queries() for name in metric_names(expr)})
    missing = sorted(set(used) - edge_names - broker_names)
    assert not missing, f"dashboards query series no running process exports: {missing}"
    # The values reflect the traffic, merged over both workers.
    assert 'django_ws_edge_handshakes_rejected_total{status="404"} 1.0' in edge_text
    assert "django_ws_edge_consumer_errors_total 1.0" in edge_text
    if shutil.which("promtool"):
        for text in (edge_text, broker_text):
            result = await asyncio.to_thread(
                subprocess.run,
                ["promtool", "check", "metrics"],
                input=text,
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, result.stdout + result.stderr
    # Presence: a logged-in user joins a presence group (presence.join), and a third
    # member of a group of at most two is refused.
    users = await asyncio.to_thread(make_users, tmp_path, ["olga"])
    present = await connect(
        f"{edge.ws_url}/ws/presence/presence_observed/",
        additional_headers={"Cookie": f"sessionid={users['olga'][1]}"},
    )
    await asyncio.wait_for(present.recv(), 5)
    crowd = [await connect(f"{edge.ws_url}/ws/presence/crowded/") for _ in range(2)]
    with pytest.raises(InvalidStatus):
        await connect(f"{edge.ws_url}/ws/presence/crowded/")
    for ws in (present, *crowd):
        await ws.close()
    await b.close(code=4000)
    await asyncio.sleep(0.3)
    assert 'django_ws_edge_connections_closed_total{code="4000-4999"} 1.0' in scrape(edge_url)[0]

    # A receive queue (new_channel()) nobody reads overflows.
    reader = await connect(f"{edge.ws_url}/ws/protocol/x/")
    await reader.send(json.dumps({"new_channel": "unread"}))
    assert "channel" in json.loads(await asyncio.wait_for(reader.recv(), 5))
    # (The queue's group subscription reaches the broker a moment after the answer.)
    for i in range(DEFAULT_CAPACITY + 5):
        await a.send(json.dumps({"group": "unread", "text": str(i)}))

    def overflowed() -> bool:
        return "django_ws_edge_receive_queue_dropped_total 0.0" not in scrape(edge_url)[0]

    for _ in range(50):
        if await asyncio.to_thread(overflowed):
            break
        for i in range(10):
            await a.send(json.dumps({"group": "unread", "text": str(i)}))
        await asyncio.sleep(0.1)
    await reader.close()

    # Stalled workers: the broker's queues for their streams fill up and overflow (the
    # edge learns how many were dropped); a publish to a bad group name is refused.
    async with grpc.aio.insecure_channel(broker.listen) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        workers = edge.worker_pids()
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            body = codec.encode_dict_event(
                {"type": "relay", "text": "x" * 32_000, "from": "observer", "group": "observed"}
            )
            for _ in range(20):
                await stub.Publish(
                    broker_pb2.PublishRequest(
                        publish=[broker_pb2.Publish(group="observed", event=body)] * 20,
                        shards=1,
                    ),
                    timeout=5,
                )
            broker_scrapes.append(reading(scrape(metrics_url)[0]))
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        # A retried request (same publisher and seq) is applied once.
        retried = broker_pb2.PublishRequest(
            publish=[broker_pb2.Publish(channel="ws.nobody.x", event=body, seq=1)],
            shards=1,
            publisher="pub.observer",
        )
        for _ in range(2):
            await stub.Publish(retried, timeout=5)
        bad_name = broker_pb2.PublishRequest(
            publish=[broker_pb2.Publish(group="not a group", event=body)], shards=1
        )
        assert (await stub.Publish(bad_name, timeout=5)).refusals
    while True:  # what piled up reaches member a
        try:
            await asyncio.wait_for(a.recv(), 1)
        except TimeoutError:
            break

    # A broker crash: links go down and come back, the restarted broker (a new epoch)
    # answers the edges' resumes with a gap, and a publish the stopped broker never
    # acknowledged is sent again.
    broker_scrapes.append(reading(scrape(metrics_url)[0]))
    broker.signal(signal.SIGSTOP)
    await a.send(json.dumps({"text": "not acknowledged"}))
    await asyncio.sleep(0.3)
    broker.signal(signal.SIGKILL)
    broker.wait(10)
    wait_until(lambda: edge.readyz()[0] == 503, 10, "the edge to notice the broker is gone")
    edge_scrapes.append(reading(scrape(edge_url)[0]))
    broker = stack.broker(broker.listen, *broker_args, name="broker-restarted")
    got = json.loads(await asyncio.wait_for(a.recv(), 10))
    assert got["text"] == "not acknowledged"
    wait_until(lambda: edge.readyz()[0] == 200, 10, "the edge ready again")
    await asyncio.sleep(0.3)
    edge_scrapes.append(reading(scrape(edge_url)[0]))
    broker_scrapes.append(reading(scrape(metrics_url)[0]))
    # A reshard moves the shard count.
    await asyncio.to_thread(reshard, [broker.listen], 2, 1)
    broker_scrapes.append(reading(scrape(metrics_url)[0]))
    await a.close()

    flat = []
    for series in used:
        readings = broker_scrapes if series.startswith("django_ws_broker_") else edge_scrapes
        if series in ONLY_ON_OTHER_FAULTS:
            if moved(series, readings):
                print(f"{series} (listed as moving only on other faults) moved here too")
            continue
        if not moved(series, readings):
            flat.append(series)
    print(
        f"\n{len(used)} dashboard series, all exported by the live edge and broker; {len(used) - len(ONLY_ON_OTHER_FAULTS) - len(flat)} "
        f"moved here, {len(ONLY_ON_OTHER_FAULTS)} move only on faults other tests drive"
    )
    assert not flat, f"dashboard series that stayed flat under traffic and faults: {flat}"
    for series, (why, test) in ONLY_ON_OTHER_FAULTS.items():
        assert series in used, f"{series} is listed but no dashboard charts it"
        assert series.removesuffix("_total") in (TESTS / test).read_text(), (
            f"{test} is said to move {series} ({why}) but does not mention it"
        )
