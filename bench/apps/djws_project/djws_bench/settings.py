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
