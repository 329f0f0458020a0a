"""OpenTelemetry glue: spans around consumer work and trace context on the wire.

Off by default, so the hot path pays one attribute read. It turns on when a tracer
provider is configured by the application (``opentelemetry.trace.set_tracer_provider``),
or through ``WEBSOCKET_TRACING = True``, or the standard ``OTEL_TRACES_EXPORTER``
environment variable set to anything but ``none``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from opentelemetry import propagate, trace

TRACER_NAME = "django_ws"


class _Switch:
    """Whether tracing is on, decided once per process (settings do not change)."""

    enabled: bool | None = None


def tracing_enabled() -> bool:
    if _Switch.enabled is None:
        from django.conf import settings

        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none").lower()
        _Switch.enabled = bool(getattr(settings, "WEBSOCKET_TRACING", False)) or exporter != "none"
    return _Switch.enabled


def set_tracing(enabled: bool) -> None:
    """Turn tracing on or off for this process (tests, or an app's own start-up)."""
    _Switch.enabled = enabled


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def inject_trace(carrier: MutableMapping[str, str]) -> None:
    """Put the current trace context into a publish's ``trace`` map."""
    if tracing_enabled():
        propagate.inject(carrier)


def extract_trace(carrier: Any) -> Any:
    """The context carried by a delivery's ``trace`` map (None when empty)."""
    if not carrier:
        return None
    return propagate.extract(dict(carrier))
