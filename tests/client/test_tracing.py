"""One trace follows a message from the sender's edge through the broker to the
receiving edge: a real worker and a real broker over real gRPC and websockets, run in
this process so that the SDK's in-memory exporter sees the spans of both."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from django_ws_broker.server import Broker, BrokerOptions
from django_ws_client.conf import middleware_paths
from django_ws_client.middlewares.base import build_stack
from django_ws_client.tracing import set_tracing
from django_ws_client.transport import use_layer
from django_ws_client.transport.config import parse_config
from django_ws_edge.layer import EdgeChannelLayer
from django_ws_edge.options import WorkerOptions
from django_ws_edge.worker import Worker

from support.clients import join
from support.processes import free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    set_tracing(True)
    try:
        yield exporter
    finally:
        set_tracing(False)
        exporter.shutdown()


async def test_publish_and_deliver_spans_share_one_trace(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    address = f"unix:{tmp_path / 'broker.sock'}"
    broker = Broker(BrokerOptions(listen=address, tracing=True))
    await broker.start()
    layer = EdgeChannelLayer(parse_config({"address": address}))
    port = free_port()
    worker = Worker(WorkerOptions(bind=f"127.0.0.1:{port}"), build_stack(middleware_paths()), layer)
    stop = asyncio.Event()
    with use_layer(layer):
        serving = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(200):
            if layer.ready and worker.server is not None:
                break
            await asyncio.sleep(0.02)
        sender, _ = await join(f"ws://127.0.0.1:{port}/ws/group/traced/")
        receiver, _ = await join(f"ws://127.0.0.1:{port}/ws/group/traced/")
        exporter.clear()
        await sender.send(json.dumps({"text": "follow me"}))
        assert json.loads(await asyncio.wait_for(receiver.recv(), 5))["text"] == "follow me"
        assert json.loads(await asyncio.wait_for(sender.recv(), 5))["text"] == "follow me"
        await sender.close()
        await receiver.close()
    finally:
        stop.set()
        await asyncio.wait_for(serving, 10)
        await broker.server.stop(None)

    spans = {s.name: s for s in exporter.get_finished_spans()}
    receive = spans["django_ws receive"]
    group_send = spans["django_ws group_send"]
    publish = spans["django_ws broker.publish"]
    deliver = spans["django_ws deliver"]
    trace_ids = {s.context.trace_id for s in (receive, group_send, publish, deliver)}
    print(
        f"\nspans in trace {receive.context.trace_id:032x}: receive -> group_send -> broker.publish -> deliver"
    )
    assert len(trace_ids) == 1
    assert group_send.parent.span_id == receive.context.span_id
    assert publish.parent.span_id == group_send.context.span_id
    assert deliver.parent.span_id == publish.context.span_id
    assert (
        publish.attributes["django_ws.group"] == "traced"
        and publish.attributes["django_ws.edges"] == 1
    )
    assert deliver.attributes["django_ws.members"] == 2
