"""OpenTelemetry in the Django-facing processes: is tracing on, and the tracer.

Spans never carry secrets unless asked to: a query string's values (``?token=...``) and
sensitive headers (cookies, authorization) are redacted from span attributes, unless
``WEBSOCKET_TRACING_RECORD_SENSITIVE = True``.

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

REDACTED = "[redacted]"
"""What replaces a secret in a span attribute."""

SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "x-csrftoken",
    }
)
"""Headers whose values are credentials: never recorded as they are."""

URL_ATTRIBUTES = frozenset({"path", "url", "target"})
"""Attributes holding a request target, whose query string is redacted."""


class _Switch:
    """Whether tracing is on, decided once per process (settings do not change)."""

    enabled: bool | None = None
    record_sensitive: bool | None = None


def tracing_enabled() -> bool:
    if _Switch.enabled is None:
        from django.conf import settings

        wanted = bool(getattr(settings, "WEBSOCKET_TRACING", False))
        if wanted and wire_tracing.exporter_from_environment() == "none":
            os.environ.setdefault("OTEL_TRACES_EXPORTER", "console")
        _Switch.enabled = wire_tracing.configure_provider("django-ws-edge")
    return _Switch.enabled


def set_tracing(enabled: bool, *, record_sensitive: bool | None = None) -> None:
    """Turn tracing on or off for this process (tests, or an app's own start-up);
    ``record_sensitive`` overrides ``WEBSOCKET_TRACING_RECORD_SENSITIVE``."""
    _Switch.enabled = enabled
    _Switch.record_sensitive = record_sensitive


def record_sensitive() -> bool:
    """Whether span attributes may carry query strings and sensitive headers as they
    are (``WEBSOCKET_TRACING_RECORD_SENSITIVE``, False by default)."""
    if _Switch.record_sensitive is None:
        from django.conf import settings

        _Switch.record_sensitive = bool(
            getattr(settings, "WEBSOCKET_TRACING_RECORD_SENSITIVE", False)
        )
    return _Switch.record_sensitive


def redact_target(target: str) -> str:
    """A request target with every query value replaced: ``/ws/?token=abc&room=1``
    becomes ``/ws/?token=[redacted]&room=[redacted]``. A bare query item (no ``=``) may
    itself be a token, so it is replaced whole."""
    path, separator, query = target.partition("?")
    if not separator:
        return path
    items = []
    for item in query.split("&"):
        name, equals, _ = item.partition("=")
        items.append(f"{name}={REDACTED}" if equals else REDACTED)
    return f"{path}?{'&'.join(items)}"


def redact_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Span attributes with secrets removed, unless recording them is allowed: the
    query values of a request target, and the values of sensitive headers (passed as
    ``header_<name>`` keyword arguments, with underscores for hyphens)."""
    if record_sensitive():
        return attributes
    redacted: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in URL_ATTRIBUTES and isinstance(value, str):
            value = redact_target(value)
        elif key.startswith("header_") and key[7:].replace("_", "-").lower() in SENSITIVE_HEADERS:
            value = REDACTED
        redacted[key] = value
    return redacted


def tracer() -> trace.Tracer:
    return wire_tracing.tracer()


def span(name: str, kind: SpanKind, **attributes: Any) -> AbstractContextManager[Any]:
    """A current span named ``name`` while tracing is on; a no-op context otherwise."""
    if not tracing_enabled():
        return contextlib.nullcontext()
    return tracer().start_as_current_span(
        name, kind=kind, attributes=wire_tracing.span_attributes(**redact_attributes(attributes))
    )


def inject_trace(carrier: MutableMapping[str, str]) -> None:
    """Put the current trace context into a publish's ``trace`` map (when tracing)."""
    if tracing_enabled():
        wire_tracing.inject(carrier)
