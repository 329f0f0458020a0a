"""Fuzzing the pure parsers: whatever they are given, they answer or raise the documented
errors (ValueError, TypeError, InvalidChannelLayerError), never anything else.

The event codec matters most: it runs inside the edge on bodies any publisher chose,
so another exception type there would escape its handler. ``FUZZ_EXAMPLES`` raises the
number of examples (see tests/support/fuzzing.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from django_ws_client.exceptions import InvalidChannelLayerError
from django_ws_client.transport.config import CONFIG_KEYS, TransportConfig, parse_config
from django_ws_proto import codec, names
from django_ws_proto.v1 import broker_pb2

from support.fuzzing import fuzz_settings

ALLOWED = (ValueError, TypeError, InvalidChannelLayerError)

# Text protobuf accepts (no lone surrogates), so the Event itself can always be built.
wire_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.text(max_size=8), json_values, max_size=5).map(
        lambda value: json.dumps(value).encode()
    ),
    # Deep nesting: json raises RecursionError, which must not escape as such.
    st.integers(900, 200_000).map(lambda depth: b"[" * depth),
    st.integers(900, 200_000).map(lambda depth: b'{"a":' * depth),
)


@pytest.fixture(scope="module", autouse=True)
def django_settings() -> None:
    """parse_config derives the embedded broker's address from the settings."""
    from django.conf import settings

    if not settings.configured:
        settings.configure()


@fuzz_settings(400)
@given(
    kind=st.integers(-(2**31), 2**31 - 1),
    event_type=wire_text,
    body=bodies,
)
@example(kind=codec.DICT, event_type="m", body=b"[" * 100_000)
@example(kind=codec.GROUP_MESSAGE, event_type="m", body=b"\xff\xfe")
def test_fuzz_event_decoding_raises_only_value_error(
    kind: int, event_type: str, body: bytes
) -> None:
    event = broker_pb2.Event(type=event_type, kind=kind, body=body)  # type: ignore[arg-type]
    try:
        decoded = codec.decode(event)
    except ValueError as exc:
        assert str(exc)  # a message that says what is wrong
        return
    assert kind in (codec.DICT, codec.GROUP_MESSAGE, codec.CONTROL)
    assert isinstance(decoded.body, dict) and decoded.type == event_type


@fuzz_settings(300)
@given(
    value=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    depth=st.integers(0, 5000),
)
def test_fuzz_event_encoding_round_trips_or_raises_documented_errors(
    value: dict[str, Any], depth: int
) -> None:
    nested: Any = value
    for _ in range(depth):
        nested = [nested]
    event = {"type": "m", "value": nested}
    try:
        encoded = codec.encode_dict_event(event)
    except (ValueError, TypeError):
        return
    assert codec.decode(encoded).body == json.loads(json.dumps(event))


name_inputs = st.one_of(
    st.text(max_size=150),
    st.text(alphabet="abcXYZ019-_.!", max_size=120),
    st.binary(max_size=20),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=3),
)

_GROUP = re.compile(r"[A-Za-z0-9\-_.]{1,100}")
_CHANNEL = re.compile(r"(?=.{1,100}$)[A-Za-z0-9\-_.]+(![A-Za-z0-9\-_.]*)?")
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,99}")


@fuzz_settings(500)
@given(name=name_inputs)
def test_fuzz_name_rules_answer_and_agree_with_their_description(name: object) -> None:
    for check, require, rule, pattern in (
        (names.group_name_error, names.require_group_name, names.GROUP_RULE, _GROUP),
        (names.channel_name_error, names.require_channel_name, names.CHANNEL_RULE, _CHANNEL),
        (names.event_type_error, names.require_event_type, names.TYPE_RULE, _TYPE),
    ):
        error = check(name)
        valid = isinstance(name, str) and pattern.fullmatch(name) is not None
        assert (error is None) == valid, (name, error)
        if error is None:
            assert require(name) == name
        else:
            assert error.startswith(rule) and len(error) < len(rule) + 200
            with pytest.raises(ValueError, match=re.escape(rule)):
                require(name)
    if isinstance(name, str):
        assert isinstance(names.handler_name(name), str)
        assert names.channel_home(name) == name.split("!", 1)[0]


config_keys = st.sampled_from([*sorted(CONFIG_KEYS), "unknown"])
config_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70_000),
    st.floats(),
    st.text(max_size=40),
    st.sampled_from(
        [
            "unix:/tmp/x.sock",
            "unix:",
            "unix-abstract:ws",
            "127.0.0.1:50051",
            "[::1]:50051",
            "host:0",
            "host:99999",
            "b-{ordinal}:50051",
            "b-{ordinal}-{zone}:50051",
            "b-{0}{ordinal}:1",
            "b-{ordinal:>{width}}:1",
            "b-{ordinal!z}:1",
            "b-{ordinal.real}:1",
            "b-{ordinal[0]}:1",
            "{ordinal",
            "{ordinal}}",
        ]
    ),
    st.lists(st.text(max_size=20) | st.integers(), max_size=3),
    st.lists(st.sampled_from(["a:1", "b:2", "unix:/s"]), max_size=4),
    st.dictionaries(st.sampled_from(["ca", "cert", "key", "server_name"]), st.text(max_size=5)),
)


@fuzz_settings(500)
@given(
    config=st.one_of(
        st.dictionaries(config_keys, config_values, max_size=6),
        st.none(),
        st.integers(),
        st.text(max_size=10),
        st.lists(st.integers(), max_size=2),
    )
)
@example(config={"brokers": "b-{ordinal}-{zone}:50051", "shards": 2})
@example(config={"brokers": "b-{0}{ordinal}:1", "shards": 1})
def test_fuzz_transport_config_raises_only_documented_errors(config: Any) -> None:
    try:
        parsed = parse_config(config)
    except ALLOWED as exc:
        if isinstance(exc, InvalidChannelLayerError):
            assert "WEBSOCKET_TRANSPORT_BACKENDS['default']['CONFIG']" in str(exc)
        return
    assert isinstance(parsed, TransportConfig)
    assert 1 <= parsed.shards <= max(1, len(parsed.brokers))
    for ordinal in range(parsed.shards):
        assert parsed.address_for(ordinal)
