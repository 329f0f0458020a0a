"""OpenTelemetry in the Django-facing processes: is tracing on, and the tracer.

Off by default, so the hot path pays one attribute read. It is on when the application
installed an SDK tracer provider, when ``WEBSOCKET_TRACING = True`` (the standard OTEL_*
variables then choose the exporter; console by default), or when
``OTEL_TRACES_EXPORTER`` names an exporter. Context crosses processes in each message's
``trace`` map (:mod:`django_ws_proto.tracing`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from django_ws_proto import tracing as wire_tracing


class _Switch:
    """Whether tracing is on, decided once per process (settings do not change)."""

    enabled: bool | None = None


def tracing_enabled() -> bool:
    if _Switch.enabled is None:
        from django.conf import settings

        wanted = bool(getattr(settings, "WEBSOCKET_TRACING", False))
        if wanted and wire_tracing.exporter_from_environment() == "none":
            os.environ.setdefault("OTEL_TRACES_EXPORTER", "console")
        _Switch.enabled = wire_tracing.configure_provider("django-ws-edge")
    return _Switch.enabled


def set_tracing(enabled: bool) -> None:
    """Turn tracing on or off for this process (tests, or an app's own start-up)."""
    _Switch.enabled = enabled


def tracer() -> trace.Tracer:
    return wire_tracing.tracer()


def span(name: str, kind: SpanKind, **attributes: Any) -> AbstractContextManager[Any]:
    """A current span named ``name`` while tracing is on; a no-op context otherwise."""
    if not tracing_enabled():
        return contextlib.nullcontext()
    return tracer().start_as_current_span(
        name, kind=kind, attributes=wire_tracing.span_attributes(**attributes)
    )


def inject_trace(carrier: MutableMapping[str, str]) -> None:
    """Put the current trace context into a publish's ``trace`` map (when tracing)."""
    if tracing_enabled():
        wire_tracing.inject(carrier)
