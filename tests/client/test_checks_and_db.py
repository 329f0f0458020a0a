"""System checks name the bad setting; database_sync_to_async refreshes stale connections."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.test import override_settings

from django_ws_client.db import database_sync_to_async


def ids(**settings: object) -> dict[str, str]:
    with override_settings(**settings):
        return {m.id: m.msg for m in run_checks(tags=["django_ws"])}


def test_the_test_project_is_clean() -> None:
    assert ids() == {}


def test_unknown_backend_path() -> None:
    found = ids(
        WEBSOCKET_TRANSPORT_BACKENDS={"default": {"BACKEND": "nowhere.Layer", "CONFIG": {}}}
    )
    assert "django_ws.E001" in found and "nowhere.Layer" in found["django_ws.E001"]


def test_bad_broker_addresses_and_shards() -> None:
    bad = {
        "default": {
            "BACKEND": "django_ws_client.transport.GRPCTransportLayer",
            "CONFIG": {"address": "not an address"},
        }
    }
    found = ids(WEBSOCKET_TRANSPORT_BACKENDS=bad)
    assert (
        "['CONFIG']['address']: 'not an address' is not a broker address" in found["django_ws.E002"]
    )
    template = {
        "default": {
            "BACKEND": "django_ws_client.transport.GRPCTransportLayer",
            "CONFIG": {"brokers": "broker-{ordinal}:50051"},
        }
    }
    assert (
        "['shards'] must be the number of brokers"
        in ids(WEBSOCKET_TRANSPORT_BACKENDS=template)["django_ws.E002"]
    )


def test_unreadable_route_module_and_missing_setting() -> None:
    assert "cannot be loaded" in ids(WEBSOCKET_ROUTE_MODULE="no.such.module")["django_ws.E003"]
    assert (
        "no 'urlpatterns'" in ids(WEBSOCKET_ROUTE_MODULE="django_ws_client.conf")["django_ws.E003"]
    )
    assert "is not set" in ids(WEBSOCKET_ROUTE_MODULE=None)["django_ws.E003"]


def test_middleware_that_does_not_import_and_missing_origin_check() -> None:
    found = ids(
        WEBSOCKET_MIDDLEWARE=[
            "no.such.Middleware",
            "django_ws_client.middlewares.route.RouteMiddleware",
        ]
    )
    assert "no.such.Middleware" in found["django_ws.E004"]
    assert "no origin check" in found["django_ws.W001"]


def test_unknown_server_keys() -> None:
    assert "MAX_CONECTIONS" in ids(WEBSOCKET_SERVER={"MAX_CONECTIONS": 5})["django_ws.E005"]


def test_event_loop_eager_tasks_and_broker_in_worker_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ids(WEBSOCKET_SERVER={"EVENT_LOOP": "asyncio", "EAGER_TASKS": True}) == {}
    bad_loop = ids(WEBSOCKET_SERVER={"EVENT_LOOP": "trio"})["django_ws.E005"]
    print(f"\n{bad_loop}")
    assert bad_loop == (
        "WEBSOCKET_SERVER['EVENT_LOOP'] must be one of 'auto', 'asyncio', 'uvloop', not 'trio'"
    )
    bad_eager = ids(WEBSOCKET_SERVER={"EAGER_TASKS": "yes"})["django_ws.E005"]
    assert bad_eager == "WEBSOCKET_SERVER['EAGER_TASKS'] must be True or False, not 'yes'"
    bad_inside = ids(WEBSOCKET_SERVER={"BROKER_IN_WORKER": 1})["django_ws.E005"]
    assert bad_inside == "WEBSOCKET_SERVER['BROKER_IN_WORKER'] must be True or False, not 1"
    assert ids(WEBSOCKET_SERVER={"BROKER_IN_WORKER": True}) == {}
    # uvloop named where it does not import (None in sys.modules: the import fails).
    monkeypatch.setitem(sys.modules, "uvloop", None)
    missing = ids(WEBSOCKET_SERVER={"EVENT_LOOP": "uvloop"})["django_ws.E005"]
    print(missing)
    assert missing.startswith("WEBSOCKET_SERVER['EVENT_LOOP'] is 'uvloop' but uvloop does not")
    assert ids(WEBSOCKET_SERVER={"EVENT_LOOP": "auto"}) == {}


async def test_database_sync_to_async_closes_stale_connections() -> None:
    def open_connection() -> object:
        connection.ensure_connection()
        # Mark it as past its CONN_MAX_AGE, as an idle worker's connection would be.
        connection.close_at = time.monotonic() - 1
        return connection.connection

    def current_connection() -> object:
        connection.ensure_connection()
        return connection.connection

    stale = await database_sync_to_async(open_connection)()
    fresh = await database_sync_to_async(current_connection)()
    assert stale is not fresh


def test_tcp_brokers_without_a_secret_or_mutual_tls_are_warned_about(tmp_path: Path) -> None:
    def backends(**config: object) -> dict[str, object]:
        return {
            "default": {
                "BACKEND": "django_ws_client.transport.GRPCTransportLayer",
                "CONFIG": config,
            }
        }

    found = ids(WEBSOCKET_TRANSPORT_BACKENDS=backends(address="10.0.0.5:50051"))
    print(f"\nW010: {found.get('django_ws.W010')}")
    assert "10.0.0.5:50051" in found["django_ws.W010"]
    secret = tmp_path / "secret"
    secret.write_text("s" * 32 + "\n")
    assert "django_ws.W010" not in ids(
        WEBSOCKET_TRANSPORT_BACKENDS=backends(address="10.0.0.5:50051", secret_file=str(secret))
    )
    # A unix socket (the embedded broker) needs neither.
    assert ids(WEBSOCKET_TRANSPORT_BACKENDS=backends(address="unix:/run/ws.sock")) == {}
    # A secret file that is not one is an error naming the setting, not the content.
    secret.write_text("short\n")
    found = ids(
        WEBSOCKET_TRANSPORT_BACKENDS=backends(address="10.0.0.5:50051", secret_file=str(secret))
    )
    print(f"E002: {found['django_ws.E002']}")
    assert "['secret_file']" in found["django_ws.E002"] and "short" not in found["django_ws.E002"]
