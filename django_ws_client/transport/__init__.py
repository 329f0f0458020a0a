"""The channel layer: ``get_channel_layer()`` and the transport backends.

Inside the websocket server, ``get_channel_layer()`` returns the edge's layer (which
knows the worker's own connections); anywhere else (views, tasks, commands) it returns
the backend named in ``WEBSOCKET_TRANSPORT_BACKENDS``, built once per process.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from django_ws_client import conf
from django_ws_client.exceptions import InvalidChannelLayerError
from django_ws_client.seed_paths import current_path
from django_ws_client.transport.aliased import AliasedLayer
from django_ws_client.transport.base import ChannelLayer
from django_ws_client.transport.config import TransportConfig, parse_config
from django_ws_client.transport.grpc_layer import GRPCTransportLayer
from django_ws_client.transport.inmemory import InMemoryChannelLayer

__all__ = [
    "AliasedLayer",
    "ChannelLayer",
    "GRPCTransportLayer",
    "InMemoryChannelLayer",
    "TransportConfig",
    "get_channel_layer",
    "in_test_environment",
    "layer_config",
    "serve_aliases",
    "served_layer",
    "use_layer",
]

_server_layers: contextvars.ContextVar[dict[str, ChannelLayer] | None] = contextvars.ContextVar(
    "django_ws_server_layers", default=None
)


class _LayerCache:
    """Layers built from settings, one per alias per process (rebuilt after a fork)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.layers: dict[str, ChannelLayer] = {}

    def get(self, alias: str) -> ChannelLayer:
        with self.lock:
            if self.pid != os.getpid():
                self.layers, self.pid = {}, os.getpid()
            layer = self.layers.get(alias)
            if layer is None:
                layer = self.layers[alias] = build_layer(alias)
            return layer

    def clear(self) -> None:
        with self.lock:
            self.layers = {}


_cache = _LayerCache()


class _LiveServerState:
    """Whether a live-server test case runs: then even in tests, layers from settings
    publish to its broker, so a view's group_send reaches its websocket server."""

    running = False


_live_server = _LiveServerState()


def publish_to_live_server(running: bool) -> None:
    """Used by ``ChannelsLiveServerTestCase`` around its server's life."""
    _live_server.running = running
    reset_layers()


def backend_settings(alias: str) -> dict[str, Any]:
    backends = conf.transport_backends()
    if alias not in backends:
        raise InvalidChannelLayerError(
            f"WEBSOCKET_TRANSPORT_BACKENDS has no alias {alias!r} (it has {sorted(backends)})"
        )
    entry = backends[alias]
    if not isinstance(entry, dict) or "BACKEND" not in entry:
        raise InvalidChannelLayerError(
            f"WEBSOCKET_TRANSPORT_BACKENDS[{alias!r}] must be a dict with a 'BACKEND' path"
        )
    return entry


def layer_config(alias: str = "default") -> TransportConfig:
    """The parsed CONFIG of a backend alias."""
    return parse_config(backend_settings(alias).get("CONFIG"), alias)


def in_test_environment() -> bool:
    """Whether Django's test environment is set up in this process (``manage.py test``,
    pytest-django, or ``django.test.utils.setup_test_environment()``): it gives
    ``django.core.mail`` its ``outbox`` until it is torn down."""
    from django.core import mail

    return hasattr(mail, "outbox")


def build_layer(alias: str = "default") -> ChannelLayer:
    entry = backend_settings(alias)
    path = entry["BACKEND"]
    path = current_path(path)
    try:
        backend = import_string(path)
    except ImportError as exc:
        raise InvalidChannelLayerError(
            f"WEBSOCKET_TRANSPORT_BACKENDS[{alias!r}]['BACKEND'] = {entry['BACKEND']!r} "
            f"does not import: {exc}"
        ) from exc
    if (
        isinstance(backend, type)
        and issubclass(backend, InMemoryChannelLayer)
        and (not in_test_environment() or _live_server.running)
    ):
        # An in-memory layer outside tests would take a view's group_send and deliver it
        # to nobody: the consumers live in the websocket server's processes. What it
        # means there (one machine, no extra service) is the embedded broker.
        backend = GRPCTransportLayer
    layer = backend(layer_config(alias))
    if not isinstance(layer, ChannelLayer):
        raise InvalidChannelLayerError(f"{path} is not a django_ws_client ChannelLayer")
    if alias != "default" and not isinstance(layer, InMemoryChannelLayer):
        return AliasedLayer(layer, alias)
    return layer


def get_channel_layer(alias: str = "default") -> ChannelLayer:
    """The channel layer for ``alias``: the server's inside the websocket server,
    else one built from settings and reused by every caller in this process."""
    server_layers = _server_layers.get()
    if server_layers is not None and alias in server_layers:
        return server_layers[alias]
    return _cache.get(alias)


def served_layer(alias: str) -> ChannelLayer | None:
    """The layer installed for ``alias`` by the server or communicator running this code
    (:func:`use_layer`), or None when none is."""
    return (_server_layers.get() or {}).get(alias)


def serving_any_layer() -> bool:
    """Whether this code runs inside a server or communicator that installed layers."""
    return bool(_server_layers.get())


@contextmanager
def serve_aliases(layer: ChannelLayer, alias: str) -> Iterator[list[str]]:
    """Serve ``alias`` with the server's ``layer``, and with it every other alias whose
    CONFIG names the same brokers (each through its own group names, as
    :mod:`~django_ws_client.transport.aliased` explains). Yields the aliases served;
    a consumer naming another one is refused by name."""
    aliases = [alias]
    for other in conf.transport_backends():
        if other == alias:
            continue
        try:
            config = layer_config(other)
        except InvalidChannelLayerError:
            continue  # reported by the system checks
        if (config.brokers, config.shards) == (layer.config.brokers, layer.config.shards):
            aliases.append(other)
    with ExitStack() as installed:
        for name in aliases:
            view = layer if name == "default" else AliasedLayer(layer, name)
            installed.enter_context(use_layer(view, name))
        yield aliases


@contextmanager
def use_layer(layer: ChannelLayer, alias: str = "default") -> Iterator[None]:
    """Make ``get_channel_layer(alias)`` return ``layer`` in this context and in the
    tasks and threads started from it (how the edge and test helpers install theirs)."""
    current = dict(_server_layers.get() or {})
    current[alias] = layer
    token = _server_layers.set(current)
    try:
        yield
    finally:
        _server_layers.reset(token)


def reset_layers(**_: Any) -> None:
    """Forget layers built from settings (after changing settings in tests)."""
    _cache.clear()


def _settings_changed(setting: str, **_: Any) -> None:
    # As Channels does for CHANNEL_LAYERS: override_settings gives a test fresh layers.
    if setting in ("WEBSOCKET_TRANSPORT_BACKENDS", "CHANNEL_LAYERS"):
        reset_layers()


setting_changed.connect(_settings_changed)
