"""Health and metrics of running processes: what probes and dashboards rely on."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

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


async def test_every_dashboard_metric_is_exported_by_a_running_edge_or_broker(stack: Stack) -> None:
    pytest.importorskip("grafana_foundation_sdk", reason="pip install -e '.[deploy]'")
    from deploy.dashboards import all_queries
    from deploy.promql import metric_names

    metrics_port = free_port()
    broker = stack.broker(None, "--metrics", f"127.0.0.1:{metrics_port}")
    edge = stack.edge(workers=2, broker=broker.listen)
    # Traffic that touches every kind of metric: connections opened and closed with a
    # code, messages both ways, group sends and deliveries, a rejected handshake.
    a, _ = await join(f"{edge.ws_url}/ws/group/observed/")
    b, _ = await join(f"{edge.ws_url}/ws/group/observed/")
    await a.send(json.dumps({"text": "measured"}))
    for ws in (a, b):
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["text"] == "measured"
    with pytest.raises(InvalidStatus):
        await connect(f"{edge.ws_url}/ws/nowhere/")
    await b.close(code=4000)
    edge_text, edge_names = scrape(f"http://127.0.0.1:{edge.health_port}/metrics")
    broker_text, broker_names = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    exported = edge_names | broker_names
    used = {name for _, expr in all_queries() for name in metric_names(expr)}
    missing = sorted(used - exported)
    print(f"\n{len(used)} series used by the dashboards; all exported by the live edge and broker")
    assert not missing, f"dashboards query series no running process exports: {missing}"
    # The values reflect the traffic, merged over both workers.
    assert 'django_ws_edge_connections_closed_total{code="4000-4999"} 1.0' in edge_text
    assert 'django_ws_edge_handshakes_rejected_total{status="404"} 1.0' in edge_text
    assert "django_ws_broker_published_total" in broker_text
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
    await a.close()
