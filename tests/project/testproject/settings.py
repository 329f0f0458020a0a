"""Settings of the project the end-to-end tests serve; the tests set the environment."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "tests-only-secret-key"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django_ws_client",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "testproject.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TEST_DATABASE", ":memory:"),
        # `manage.py test` (the live-server test case): a file test database.
        "TEST": {"NAME": os.environ.get("TEST_TEST_DATABASE")},
    }
}
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

WEBSOCKET_MIDDLEWARE = [
    "django_ws_client.middlewares.scope.ScopeMiddleware",
    "django_ws_client.middlewares.origin.OriginMiddleware",
    "django_ws_client.middlewares.session.SessionMiddleware",
    "django_ws_client.middlewares.auth.AuthMiddleware",
    "django_ws_client.middlewares.route.RouteMiddleware",
]
WEBSOCKET_ALLOWED_ORIGINS = os.environ.get("TEST_ALLOWED_ORIGINS", "*").split(",")
WEBSOCKET_ROUTE_MODULE = "testproject.routing"

_config = {}
if os.environ.get("TEST_BROKERS"):
    _config["brokers"] = os.environ["TEST_BROKERS"].split(",")
elif os.environ.get("TEST_BROKER"):
    _config["address"] = os.environ["TEST_BROKER"]
if os.environ.get("TEST_SHARDS"):
    _config["shards"] = int(os.environ["TEST_SHARDS"])
if os.environ.get("TEST_TLS_CA"):
    _config["tls"] = {"ca": os.environ["TEST_TLS_CA"]}
    if os.environ.get("TEST_TLS_CERT"):
        _config["tls"].update(cert=os.environ["TEST_TLS_CERT"], key=os.environ["TEST_TLS_KEY"])
if os.environ.get("TEST_CAPACITY"):
    _config["capacity"] = int(os.environ["TEST_CAPACITY"])
_config["connect_timeout"] = float(os.environ.get("TEST_CONNECT_TIMEOUT", "5"))
if os.environ.get("TEST_EXPIRY"):
    _config["expiry"] = float(os.environ["TEST_EXPIRY"])
if os.environ.get("TEST_HISTORY_SIZE"):
    _config["history_size"] = int(os.environ["TEST_HISTORY_SIZE"])
if os.environ.get("TEST_PUBLISH_TIMEOUT"):
    _config["publish_timeout"] = float(os.environ["TEST_PUBLISH_TIMEOUT"])

# Groups named presence_* opted in to presence (tests/e2e/test_presence_cluster.py).
_config["presence_groups"] = ["presence_*"]

WEBSOCKET_TRANSPORT_BACKENDS = {
    "default": {"BACKEND": "django_ws_client.transport.GRPCTransportLayer", "CONFIG": _config}
}
if os.environ.get("TEST_EXTRA_ALIASES"):
    # "other" shares the brokers (served by the same server, with its own groups);
    # "elsewhere" names brokers this server does not link to.
    WEBSOCKET_TRANSPORT_BACKENDS["other"] = {
        "BACKEND": "django_ws_client.transport.GRPCTransportLayer",
        "CONFIG": _config,
    }
    WEBSOCKET_TRANSPORT_BACKENDS["elsewhere"] = {
        "BACKEND": "django_ws_client.transport.GRPCTransportLayer",
        "CONFIG": {"address": "unix:/nonexistent/elsewhere.sock"},
    }
WEBSOCKET_SERVER = {
    "HANDSHAKE_TIMEOUT": float(os.environ.get("TEST_HANDSHAKE_TIMEOUT", "10")),
    "GRACE_SECONDS": float(os.environ.get("TEST_GRACE_SECONDS", "5")),
}
# Limits the robustness tests tighten; each is a WEBSOCKET_SERVER key of the same name.
for _key in (
    "MAX_MESSAGE_BYTES",
    "MAX_HEADER_LINE",
    "MAX_HEADERS",
    "RATE_LIMIT",
    "RATE_BURST",
    "SOCKET_SEND_BUFFER",
    "BLOCKED_LOOP_WARNING",
    "MAX_CONNECTIONS",
    "CLOSE_TIMEOUT",
    "SLOW_CLIENT_BYTES",
    "SLOW_CLIENT_SECONDS",
    "WORKER_BUFFER_BYTES",
    "HEARTBEAT_TIMEOUT",
    "WEDGED_TIMEOUT",
    "PING_INTERVAL",
    "PING_TIMEOUT",
):
    if os.environ.get(f"TEST_{_key}"):
        WEBSOCKET_SERVER[_key] = float(os.environ[f"TEST_{_key}"])
# permessage-deflate (tests/e2e/test_relayed_frames.py).
if os.environ.get("TEST_COMPRESSION"):
    WEBSOCKET_SERVER["COMPRESSION"] = True
# The event loop and eager tasks (tests/e2e/test_event_loop.py).
if os.environ.get("TEST_EVENT_LOOP"):
    WEBSOCKET_SERVER["EVENT_LOOP"] = os.environ["TEST_EVENT_LOOP"]
if os.environ.get("TEST_EAGER_TASKS"):
    WEBSOCKET_SERVER["EAGER_TASKS"] = os.environ["TEST_EAGER_TASKS"] == "1"
if os.environ.get("TEST_BROKER_IN_WORKER"):
    WEBSOCKET_SERVER["BROKER_IN_WORKER"] = os.environ["TEST_BROKER_IN_WORKER"] == "1"
WEBSOCKET_TRACING_RECORD_SENSITIVE = bool(os.environ.get("TEST_TRACING_RECORD_SENSITIVE"))

# A project carried over from Channels keeps its CHANNEL_LAYERS and nothing of ours.
if os.environ.get("TEST_CHANNEL_LAYERS") == "inmemory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    if os.environ.get("TEST_PUBLISH_TIMEOUT"):
        CHANNEL_LAYERS["default"]["CONFIG"] = {
            "publish_timeout": float(os.environ["TEST_PUBLISH_TIMEOUT"])
        }
    del WEBSOCKET_TRANSPORT_BACKENDS
