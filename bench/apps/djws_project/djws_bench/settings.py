"""Settings of the benchmark's django-ws project.

The same workload as the Channels project beside it, with the least middleware that
serves it: no sessions, no auth, no database. ``WEBSOCKET_ALLOWED_ORIGINS = ["*"]``
because the load generator is not a browser and sends no ``Origin`` header; the origin
middleware still runs, so its cost is in the figures.
"""

import os

SECRET_KEY = "benchmark-only-secret-key"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django_ws_client"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

WEBSOCKET_MIDDLEWARE = [
    "django_ws_client.middlewares.scope.ScopeMiddleware",
    "django_ws_client.middlewares.origin.OriginMiddleware",
    "django_ws_client.middlewares.route.RouteMiddleware",
]
WEBSOCKET_ALLOWED_ORIGINS = ["*"]
WEBSOCKET_ROUTE_MODULE = "djws_bench.routing"

# The harness names a unix socket in its own temporary folder, so the embedded broker of
# a benchmark run never meets a broker left by anything else on the machine.
_broker = os.environ.get("BENCH_BROKER")
WEBSOCKET_TRANSPORT_BACKENDS = {
    "default": {
        "BACKEND": "django_ws_client.transport.GRPCTransportLayer",
        "CONFIG": {"address": _broker} if _broker else {},
    }
}

# Set by the harness: MAX_CONNECTIONS to what the open file limit lets a worker hold
# (Channels and the bare server have no such limit), so S6 can fill the limit and S7
# shows the configured one; the event loop and eager tasks of --event-loop and
# --eager-tasks.
WEBSOCKET_SERVER: dict[str, object] = {}
if os.environ.get("BENCH_MAX_CONNECTIONS"):
    WEBSOCKET_SERVER["MAX_CONNECTIONS"] = int(os.environ["BENCH_MAX_CONNECTIONS"])
if os.environ.get("BENCH_EVENT_LOOP"):
    WEBSOCKET_SERVER["EVENT_LOOP"] = os.environ["BENCH_EVENT_LOOP"]
if os.environ.get("BENCH_EAGER_TASKS"):
    WEBSOCKET_SERVER["EAGER_TASKS"] = os.environ["BENCH_EAGER_TASKS"] == "1"
if os.environ.get("BENCH_BROKER_IN_WORKER"):
    WEBSOCKET_SERVER["BROKER_IN_WORKER"] = os.environ["BENCH_BROKER_IN_WORKER"] == "1"
