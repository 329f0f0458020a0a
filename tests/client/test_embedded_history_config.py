"""The embedded broker's history bounds in CONFIG: checked when read, named in errors,
and handed to the broker as its flags (the end-to-end proof is in
tests/e2e/test_delivery_recovery.py)."""

from __future__ import annotations

import pytest

from django_ws_client.exceptions import InvalidChannelLayerError
from django_ws_client.transport.config import parse_config
from django_ws_edge.embedded import embedded_broker_flags


def test_unset_bounds_leave_the_broker_its_defaults() -> None:
    config = parse_config({"address": "unix:/x.sock"})
    assert (config.history_size, config.history_seconds, config.history_bytes) == (None,) * 3
    assert embedded_broker_flags(config) == []


def test_set_bounds_become_the_broker_flags() -> None:
    config = parse_config(
        {"address": "unix:/x.sock", "history_size": 0, "history_seconds": 30, "history_bytes": 1024}
    )
    assert embedded_broker_flags(config) == [
        "--history-size",
        "0",
        "--history-seconds",
        "30.0",
        "--history-bytes",
        "1024",
    ]


def test_the_other_embedded_broker_settings_come_first() -> None:
    config = parse_config(
        {
            "address": "unix:/x.sock",
            "presence_grace_seconds": 2,
            "max_group_members": 50,
            "history_size": 10,
        }
    )
    assert embedded_broker_flags(config) == [
        "--presence-grace-seconds",
        "2.0",
        "--max-group-members",
        "50",
        "--history-size",
        "10",
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("history_size", -1),
        ("history_size", 2.5),
        ("history_seconds", "60"),
        ("history_bytes", True),
    ],
)
def test_bad_bounds_are_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(InvalidChannelLayerError, match=key):
        parse_config({"address": "unix:/x.sock", key: value})
