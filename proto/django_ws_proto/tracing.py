"""Trace context on the wire, so one trace follows a message across processes.

A long-lived Attach stream carries thousands of messages under one set of gRPC metadata,
so per-message context cannot ride in the metadata: each ``Publish`` and ``Delivery``
carries it in its ``trace`` map, as W3C ``traceparent`` / ``tracestate`` entries
(unary publishes also send it as gRPC metadata). Both sides use these helpers, which is
why they live with the wire contract. Everything here is a no-op until tracing is on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context

logger = logging.getLogger("django_ws.tracing")

TRACER_NAME = "django_ws"


def exporter_from_environment() -> str:
    """The span exporter named by ``OTEL_TRACES_EXPORTER`` ("none" when unset)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return "none"
    return os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",")[0].strip().lower() or "none"


def configure_provider(service_name: str) -> bool:
    """Install an SDK tracer provider per the standard OTEL_* variables.

    Returns whether tracing is on. ``console`` prints spans; ``otlp`` needs the
    ``opentelemetry-exporter-otlp`` package. An application that installed its own
    provider keeps it.
    """
    exporter_name = exporter_from_environment()
    if exporter_name == "none":
        return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            logger.error(
                "OTEL_TRACES_EXPORTER=otlp needs 'pip install opentelemetry-exporter-otlp'; "
                "tracing stays off"
            )
            return False
        exporter = OTLPSpanExporter()
    else:
        logger.error("unknown OTEL_TRACES_EXPORTER %r; tracing stays off", exporter_name)
        return False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def inject(carrier: MutableMapping[str, str]) -> None:
    """Write the current span's context into a message's ``trace`` map."""
    propagate.inject(carrier)


def extract(carrier: Mapping[str, str]) -> Context | None:
    """The context carried by a message's ``trace`` map, or None when it has none."""
    if not carrier:
        return None
    return propagate.extract(dict(carrier))


def span_attributes(**values: Any) -> dict[str, Any]:
    return {f"django_ws.{key}": value for key, value in values.items() if value is not None}
