"""The Django app: registers the system checks and the ``websockets_server`` command."""

import json
import os

from django.apps import AppConfig

TEST_SERVER_ENV = "DJANGO_WS_TEST_SERVER"
"""Set by ``ChannelsLiveServerTestCase`` for the server processes it starts: the test
databases' names and the live server's host, which those fresh interpreters must use
as the test process does (Channels' live server gets them by forking)."""


class DjangoWsConfig(AppConfig):
    name = "django_ws_client"
    label = "django_ws"
    verbose_name = "django-ws"

    def ready(self) -> None:
        from django_ws_client import checks  # noqa: F401  (registers the checks)

        test_server = os.environ.get(TEST_SERVER_ENV)
        if test_server:
            use_test_server_settings(json.loads(test_server))
        if uses_drop_in_layer():
            # GRPCChannelLayer loads its core (the broker link, delivery, the wire
            # codec) on first use, which Channels makes inside the event loop at a
            # worker's first connection: 30 to 50 ms during which that worker serves
            # nobody. Loaded here, while Django starts, it costs the same once and
            # stalls no connection. Importing starts nothing (no thread, no gRPC
            # channel), so a server that forks its workers after this stays fork-safe.
            import django_ws_edge.process_layer  # noqa: F401


def uses_drop_in_layer() -> bool:
    """Whether some alias of ``CHANNEL_LAYERS`` names django-ws' GRPCChannelLayer."""
    from django.conf import settings

    from django_ws_client.conf import DROP_IN_LAYER

    layers = getattr(settings, "CHANNEL_LAYERS", None)
    if not isinstance(layers, dict):
        return False
    return any(
        isinstance(layer, dict) and layer.get("BACKEND") == DROP_IN_LAYER
        for layer in layers.values()
    )


def use_test_server_settings(values: dict) -> None:  # type: ignore[type-arg]
    """Point this process at the test databases and allow the live server's host."""
    from django.conf import settings

    for alias, name in values.get("databases", {}).items():
        settings.DATABASES[alias]["NAME"] = name
    hosts = list(settings.ALLOWED_HOSTS)
    settings.ALLOWED_HOSTS = hosts + [h for h in values.get("allowed_hosts", []) if h not in hosts]
