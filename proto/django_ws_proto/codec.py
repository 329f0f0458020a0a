"""Encoding of events for the wire.

An event is encoded once by its sender and decoded once per receiving edge worker; the
broker never looks inside. Bodies are compact JSON objects, so dict events keep their
keys and JSON-compatible values end to end, exactly as a Django user wrote them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django_ws_proto.names import require_event_type
from django_ws_proto.v1 import broker_pb2

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
"""Largest encoded event body accepted by default (1 MiB, as Channels' redis layer)."""

DICT = broker_pb2.EVENT_KIND_DICT
GROUP_MESSAGE = broker_pb2.EVENT_KIND_GROUP_MESSAGE
CONTROL = broker_pb2.EVENT_KIND_CONTROL

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_loads = json.loads


class EventTooLarge(ValueError):
    """An event whose encoded body is over the configured size limit."""


@dataclass(frozen=True, slots=True)
class DecodedEvent:
    """An event as read off the wire: its kind, type and JSON body as a dict."""

    kind: int
    type: str
    body: dict[str, Any]


def _encode_body(body: Mapping[str, Any], max_bytes: int) -> bytes:
    try:
        data = _dumps(body).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"event values must be JSON-compatible (str, int, float, bool, None, list, "
            f"dict with str keys): {exc}"
        ) from None
    except RecursionError:
        raise ValueError("event is nested too deeply to encode as JSON") from None
    if len(data) > max_bytes:
        raise EventTooLarge(
            f"event is {len(data)} bytes once encoded, over the limit of {max_bytes} "
            "bytes (raise the transport's 'max_event_bytes' to allow it)"
        )
    return data


def encode_dict_event(
    event: Mapping[str, Any], *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> broker_pb2.Event:
    """Encode a Channels-style dict event; its ``type`` key is required and checked."""
    if not isinstance(event, Mapping):
        raise TypeError(f"an event must be a dict, got {type(event).__name__}")
    if "type" not in event:
        raise ValueError("an event dict must have a 'type' key naming its handler")
    event_type = require_event_type(event["type"])
    return broker_pb2.Event(type=event_type, kind=DICT, body=_encode_body(event, max_bytes))


def encode_group_message(
    event_type: str,
    message: Any,
    params: Any,
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> broker_pb2.Event:
    """Encode the seed's ``GroupMessage(type, message=..., params=...)``."""
    require_event_type(event_type)
    body = _encode_body({"message": message, "params": params}, max_bytes)
    return broker_pb2.Event(type=event_type, kind=GROUP_MESSAGE, body=body)


def encode_control(op: str, group: str) -> broker_pb2.Event:
    """Encode an instruction for the edge that holds a channel (group_add/discard)."""
    return broker_pb2.Event(type=op, kind=CONTROL, body=_dumps({"group": group}).encode())


def decode(event: broker_pb2.Event) -> DecodedEvent:
    """Decode an event; raises ``ValueError`` naming what is wrong with a bad one."""
    if event.kind not in (DICT, GROUP_MESSAGE, CONTROL):
        raise ValueError(f"unknown event kind {event.kind} for type {event.type!r}")
    try:
        body = _loads(event.body)
    except ValueError as exc:
        raise ValueError(f"event {event.type!r} has a body that is not JSON: {exc}") from None
    except RecursionError:
        # Any sender can publish such a body; it must not escape as another exception
        # type and take down the receiving edge's broker link.
        raise ValueError(f"event {event.type!r} has a body nested too deeply to decode") from None
    if not isinstance(body, dict):
        raise ValueError(f"event {event.type!r} has a body that is not a JSON object")
    return DecodedEvent(kind=event.kind, type=event.type, body=body)
