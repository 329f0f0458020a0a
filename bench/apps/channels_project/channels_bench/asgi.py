"""The ASGI application uvicorn serves: Channels' router, no auth, no origin check
(``AllowedHostsOriginValidator`` left out, as django-ws' origin check allows ``*``).

It also answers the ASGI lifespan protocol, only to tell the harness that a worker is
up: each worker appends its pid to ``BENCH_READY_FILE`` once it can serve, and on
django-ws' layer the folder its ``django_ws_client`` came from (the run's code or a
``--baseline`` commit's).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "channels_bench.settings")
django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from channels_bench.routing import websocket_urlpatterns  # noqa: E402

router = ProtocolTypeRouter({"websocket": URLRouter(websocket_urlpatterns)})


def mark_ready(ready_file: str) -> None:
    line = str(os.getpid())
    if os.environ.get("BENCH_CHANNEL_LAYER") == "djws":
        import django_ws_client

        line += " " + os.path.dirname(os.path.dirname(django_ws_client.__file__))
    with open(ready_file, "a") as f:
        f.write(line + "\n")


async def application(scope, receive, send):
    if scope["type"] != "lifespan":
        return await router(scope, receive, send)
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            ready_file = os.environ.get("BENCH_READY_FILE")
            if ready_file:
                mark_ready(ready_file)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
