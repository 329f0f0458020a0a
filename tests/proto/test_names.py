"""Group names, channel names and event types follow Channels' rules, with the rule in
the error message."""

from __future__ import annotations

import pytest

from django_ws_client.groups import GroupMessage
from django_ws_client.transport.base import ChannelLayer, channel_of
from django_ws_proto import codec, names
from django_ws_proto.names import (
    MAX_NAME_LENGTH,
    handler_name,
    require_channel_name,
    require_event_type,
    require_group_name,
)


@pytest.mark.parametrize("name", ["chat", "room-1", "a.b_c-D9", "x" * MAX_NAME_LENGTH])
def test_valid_group_names(name: str) -> None:
    assert require_group_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "x" * (MAX_NAME_LENGTH + 1), "has space", "bang!", "ünïcode", "slash/", None, 42]
)
def test_invalid_group_names_say_the_rule(name: object) -> None:
    with pytest.raises(ValueError, match="group name must be 1 to 100 characters"):
        require_group_name(name)


def test_channel_names_allow_one_bang() -> None:
    assert require_channel_name("ws.abc!12") == "ws.abc!12"
    with pytest.raises(ValueError, match="channel name"):
        require_channel_name("a!b!c")
    with pytest.raises(ValueError, match="channel name"):
        require_channel_name("")


@pytest.mark.parametrize("event_type", ["", "_private", "9lives", "has space", "a-b", "x" * 101])
def test_invalid_event_types(event_type: str) -> None:
    with pytest.raises(ValueError, match="event type must be 1 to 100 characters"):
        require_event_type(event_type)
    with pytest.raises(ValueError, match="event type"):
        GroupMessage(event_type)
    with pytest.raises(ValueError, match="event type"):
        codec.encode_dict_event({"type": event_type})


def test_dots_become_underscores() -> None:
    assert handler_name("chat.message") == "chat_message"
    assert handler_name("chat_message") == "chat_message"


def test_dict_events_need_a_type_and_json_values() -> None:
    with pytest.raises(ValueError, match="'type' key"):
        codec.encode_dict_event({"message": "hi"})
    with pytest.raises(TypeError, match="JSON-compatible"):
        codec.encode_dict_event({"type": "x", "blob": b"bytes"})
    with pytest.raises(codec.EventTooLarge, match="over the limit of 100 bytes"):
        codec.encode_dict_event({"type": "x", "text": "y" * 200}, max_bytes=100)


def test_codec_round_trip_keeps_keys_and_values() -> None:
    event = {
        "type": "chat.message",
        "text": "héllo",
        "n": 3,
        "f": 1.5,
        "ok": True,
        "none": None,
        "nested": {"list": [1, "two"]},
    }
    decoded = codec.decode(codec.encode_dict_event(event))
    assert decoded.kind == codec.DICT and decoded.type == "chat.message" and decoded.body == event
    message = codec.decode(codec.encode_group_message("chat_message", "hi", '{"sender": "a"}'))
    assert message.kind == codec.GROUP_MESSAGE
    assert message.body == {"message": "hi", "params": '{"sender": "a"}'}


def test_decode_rejects_bad_events_clearly() -> None:
    from django_ws_proto.v1 import broker_pb2

    with pytest.raises(ValueError, match="unknown event kind"):
        codec.decode(broker_pb2.Event(type="x", kind=99, body=b"{}"))
    with pytest.raises(ValueError, match="not JSON"):
        codec.decode(broker_pb2.Event(type="x", kind=codec.DICT, body=b"\xff"))
    with pytest.raises(ValueError, match="not a JSON object"):
        codec.decode(broker_pb2.Event(type="x", kind=codec.DICT, body=b"[1]"))


def test_layer_api_validates_before_sending() -> None:
    with pytest.raises(ValueError, match="channel name"):
        channel_of("not a channel")
    assert ChannelLayer.require_valid_group_name.__name__ == "require_valid_group_name"


def test_an_error_shows_at_most_a_bounded_part_of_a_name_however_it_escapes() -> None:
    # Found by the fuzz test: 120 characters that each take up to ten to escape.
    name = "0" * 30 + "\x1f" * 12 + "\x08" + "\U00012544" * 77
    for error in (
        names.group_name_error(name),
        names.channel_name_error(name),
        names.event_type_error(name),
    ):
        assert error is not None
        shown = error.split("; got ", 1)[1]
        assert shown.startswith("'000") and shown.endswith("...")
        assert len(shown) == names.SHOWN_CHARACTERS
