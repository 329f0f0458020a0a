"""Channels settings a moved project still has are honoured or reported, never ignored
in silence; a group_send that reaches no broker is an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

from django_ws_client.transport import GRPCTransportLayer, InMemoryChannelLayer, get_channel_layer

PROJECT = Path(__file__).resolve().parents[1] / "project"
REDIS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [("127.0.0.1", 6379)], "capacity": 50},
    }
}
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def found() -> dict[str, tuple[str, str]]:
    return {m.id: (m.msg, m.hint or "") for m in run_checks(tags=["django_ws"])}


@pytest.fixture
def without_our_backends():
    with override_settings():
        del settings.WEBSOCKET_TRANSPORT_BACKENDS
        yield


def test_channel_layers_in_memory_is_honoured_without_a_report(without_our_backends) -> None:
    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        assert found() == {}
        # In tests: Channels' in-process layer, so tests publish to their communicators.
        assert isinstance(get_channel_layer(), InMemoryChannelLayer)


def test_channel_layers_redis_fires_w002_naming_what_is_not_used(without_our_backends) -> None:
    with override_settings(CHANNEL_LAYERS=REDIS):
        message, hint = found()["django_ws.W003"]
        layer = get_channel_layer()
    print("W003:", message)
    assert "channels_redis.core.RedisChannelLayer" in message and "['hosts']" in message
    assert "WEBSOCKET_TRANSPORT_BACKENDS['default']" in hint and "brokers" in hint
    # Served by the gRPC layer (the embedded broker), keeping the capacity it set.
    assert isinstance(layer, GRPCTransportLayer) and layer.capacity == 50


def test_both_layer_settings_fire_w003() -> None:
    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        message, hint = found()["django_ws.W004"]
    print("W004:", message)
    assert "ignores CHANNEL_LAYERS" in message and "delete CHANNEL_LAYERS" in hint


def test_asgi_application_fires_w004() -> None:
    with override_settings(ASGI_APPLICATION="mysite.asgi.application"):
        message, hint = found()["django_ws.W005"]
    print("W005:", message)
    assert "'mysite.asgi.application' is not read" in message
    assert "WEBSOCKET_ROUTE_MODULE" in hint and "websocket_urlpatterns" in hint


def test_another_runserver_ahead_of_ours_fires_w005() -> None:
    apps_before = [*settings.INSTALLED_APPS]
    staticfiles_first = ["django.contrib.staticfiles", *apps_before]
    with override_settings(INSTALLED_APPS=staticfiles_first):
        message, hint = found()["django_ws.W006"]
    print("W006:", message)
    assert "runserver comes from 'django.contrib.staticfiles'" in message
    assert "list 'django_ws_client' above 'django.contrib.staticfiles'" in hint
    ours_first = [*apps_before, "django.contrib.staticfiles"]
    with override_settings(INSTALLED_APPS=ours_first):
        assert "django_ws.W006" not in found()


def test_a_channels_layer_class_in_our_setting_fires_e001() -> None:
    with override_settings(WEBSOCKET_TRANSPORT_BACKENDS=IN_MEMORY):
        message, hint = found()["django_ws.E001"]
    print("E001:", message)
    assert "'channels.layers.InMemoryChannelLayer' is not a django-ws channel layer" in message
    assert "InMemoryChannelLayer' (tests)" in hint


def test_route_module_accepts_channels_websocket_urlpatterns() -> None:
    with override_settings(WEBSOCKET_ROUTE_MODULE="testproject.channels_style"):
        assert "django_ws.E003" not in found()


def test_group_send_outside_tests_with_no_server_is_an_error(tmp_path: Path) -> None:
    """A view's group_send in a project configured with Channels' in-memory layer: the
    layer outside tests is the embedded broker's, and with no server running the call
    fails by name instead of delivering to nobody."""
    code = (
        "from asgiref.sync import async_to_sync\n"
        "from django_ws_client.transport import get_channel_layer\n"
        "layer = get_channel_layer()\n"
        "print(type(layer).__name__)\n"
        "async_to_sync(layer.group_send)('chat_lobby', {'type': 'chat.message', 'message': 'hi'})\n"
    )
    env = {
        **os.environ,
        "TEST_CHANNEL_LAYERS": "inmemory",
        "TEST_PUBLISH_TIMEOUT": "2",  # how long a publish retries before it fails
        "TMPDIR": str(tmp_path),  # the embedded broker's socket: nothing listens there
        "TEST_DATABASE": str(tmp_path / "db.sqlite3"),
    }
    env.pop("TEST_BROKER", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    print("exit code", result.returncode, "last line:", result.stderr.strip().splitlines()[-1])
    assert result.returncode != 0
    assert result.stdout.strip().splitlines()[-1] == "GRPCTransportLayer"
    assert "BrokerUnavailable" in result.stderr and "is the websocket server or broker running" in result.stderr


def test_the_seed_projects_class_paths_still_work() -> None:
    """Settings written for the seed (package ``django_websockets``, the layer spelled
    ``gGPCTransportLayer``) build the same layer and middleware, and pass the checks."""
    from django_ws_client.middlewares.base import build_stack
    from django_ws_client.middlewares.route import RouteMiddleware
    from django_ws_client.transport import build_layer

    seed = {
        "default": {
            "BACKEND": "django_websockets.transport.gGPCTransportLayer",
            "CONFIG": {"brokers": ["127.0.0.1:1"]},
        }
    }
    middleware = ["django_websockets.middlewares.route.RouteMiddleware"]
    with override_settings(WEBSOCKET_TRANSPORT_BACKENDS=seed, WEBSOCKET_MIDDLEWARE=middleware):
        layer = build_layer()
        assert type(layer) is GRPCTransportLayer
        errors = {k for k in found() if k in ("django_ws.E001", "django_ws.E004")}
        assert not errors, found()
    assert isinstance(build_stack(middleware), RouteMiddleware)
    print("seed paths:", seed["default"]["BACKEND"], "->", type(layer).__name__)
