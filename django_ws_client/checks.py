"""System checks: misconfiguration is reported at start-up with an id and a hint.

| id | what |
| --- | --- |
| django_ws.E001 | a transport backend's BACKEND path does not import |
| django_ws.E002 | a transport backend's CONFIG is invalid (bad broker address, shards, ...) |
| django_ws.E003 | WEBSOCKET_ROUTE_MODULE is missing, does not import or has no urlpatterns |
| django_ws.E004 | a WEBSOCKET_MIDDLEWARE entry does not import |
| django_ws.E005 | WEBSOCKET_SERVER has an unknown key or a bad value |
| django_ws.E006 | PROMETHEUS_MULTIPROC_DIR is set but is not a writable directory |
| django_ws.W001 | origin checking is not in WEBSOCKET_MIDDLEWARE |
| django_ws.W002 | the metrics directory is unwritable or nearly full: metrics degrade |
| django_ws.W003 | CHANNEL_LAYERS uses channels_redis: the embedded broker serves it, one machine |
| django_ws.W004 | CHANNEL_LAYERS and WEBSOCKET_TRANSPORT_BACKENDS both set: the first is ignored |
| django_ws.W005 | ASGI_APPLICATION is set: django-ws does not read it |
| django_ws.W006 | another app's runserver (daphne, staticfiles) is listed ahead of ours |
| django_ws.W010 | brokers are reached over TCP with neither a role secret nor mutual TLS |
| django_ws.E020 | a routed consumer's ``presence_groups`` names a group that did not opt in |
| django_ws.E021 | WEBSOCKET_USER_GROUPS is not a bool |
| django_ws.W020 | ``presence_info_bytes`` cannot hold the default info of a user with long names |

Settings carried over from Channels are honoured where they mean something here
(``CHANNEL_LAYERS``' in-memory layer: in-process in tests, the embedded broker elsewhere;
a routing module's ``websocket_urlpatterns``) and reported here where they do not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.utils.module_loading import import_string

from django_ws_client import conf
from django_ws_client.exceptions import InvalidChannelLayerError
from django_ws_client.seed_paths import current_path, import_path
from django_ws_client.transport.base import ChannelLayer

TAG = "django_ws"

METRICS_MIN_FREE_BYTES = 1 << 20
"""Free space below which the metrics directory draws a warning: each worker allocates
64 KiB per metric type up front, and more as series appear."""

SERVER_KEYS = {
    "MAX_MESSAGE_BYTES",
    "HANDSHAKE_TIMEOUT",
    "MAX_CONNECTIONS",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "CLOSE_TIMEOUT",
    "WRITE_LIMIT",
    "COMPRESSION",
    "GRACE_SECONDS",
    "HEALTH_BIND",
    "RATE_LIMIT",
    "RATE_BURST",
    "BLOCKED_LOOP_WARNING",
    "MAX_HEADER_LINE",
    "MAX_HEADERS",
    "SOCKET_SEND_BUFFER",
    "MAX_WRITE_BUFFER",
    "SLOW_CLIENT_BYTES",
    "SLOW_CLIENT_SECONDS",
    "WORKER_BUFFER_BYTES",
    "HEARTBEAT_TIMEOUT",
    "WEDGED_TIMEOUT",
    "EVENT_LOOP",
    "EAGER_TASKS",
    "BROKER_IN_WORKER",
}


@register(TAG)
def check_transport(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    from django_ws_client.transport import backend_settings, layer_config

    errors: list[Error | Warning] = []
    backends = conf.transport_backends()
    if not isinstance(backends, dict) or not backends:
        return [
            Error(
                "WEBSOCKET_TRANSPORT_BACKENDS must be a non-empty dict of aliases",
                hint="e.g. {'default': {'BACKEND': "
                "'django_ws_client.transport.GRPCTransportLayer', "
                "'CONFIG': {}}}",
                id="django_ws.E002",
            )
        ]
    for alias in backends:
        try:
            path = current_path(backend_settings(alias)["BACKEND"])
            import_string(path)
        except InvalidChannelLayerError as exc:
            errors.append(Error(str(exc), id="django_ws.E001"))
            continue
        except ImportError as exc:
            errors.append(
                Error(
                    f"{_backends_setting()}[{alias!r}]['BACKEND'] = {path!r} does not "
                    f"import: {exc}",
                    hint="use 'django_ws_client.transport.GRPCTransportLayer'",
                    id="django_ws.E001",
                )
            )
            continue
        backend = import_string(path)
        if not (isinstance(backend, type) and issubclass(backend, ChannelLayer)):
            errors.append(
                Error(
                    f"{_backends_setting()}[{alias!r}]['BACKEND'] = {path!r} is not a django-ws "
                    "channel layer: the websocket server cannot carry its events",
                    hint="use 'django_ws_client.transport.GRPCTransportLayer' (brokers) or "
                    "'django_ws_client.transport.InMemoryChannelLayer' (tests)",
                    id="django_ws.E001",
                )
            )
            continue
        try:
            config = layer_config(alias)
        except InvalidChannelLayerError as exc:
            errors.append(Error(str(exc), id="django_ws.E002"))
            continue
        tcp = [a for a in config.brokers if not a.startswith(("unix:", "unix-abstract:"))]
        mutual_tls = config.tls is not None and config.tls.cert is not None
        if tcp and config.secret_file is None and not mutual_tls:
            errors.append(
                Warning(
                    f"WEBSOCKET_TRANSPORT_BACKENDS[{alias!r}] reaches brokers over TCP "
                    f"({tcp[0]}{', ...' if len(tcp) > 1 else ''}) with no role secret and no "
                    "mutual TLS: anything that can reach a broker can publish to any group, "
                    "attach as an edge, and reshard the cluster",
                    hint="give CONFIG 'secret_file' (or DJANGO_WS_SECRET_FILE) and start the "
                    "brokers with --edge-secrets, --publisher-secrets and --admin-secrets; "
                    "see docs/security.md",
                    id="django_ws.W010",
                )
            )
    return errors


def _runserver_provider(app_configs: Any) -> str | None:
    """The app whose ``runserver`` Django runs: the first listed that has one."""
    import os

    from django.core.management import find_commands

    for app_config in app_configs:
        if "runserver" in find_commands(os.path.join(app_config.path, "management")):
            return str(app_config.name)
    return None


def _backends_setting() -> str:
    """The setting the transport backends were read from, for messages."""
    from django.conf import settings

    if getattr(settings, "WEBSOCKET_TRANSPORT_BACKENDS", None) is None and getattr(
        settings, "CHANNEL_LAYERS", None
    ):
        return "CHANNEL_LAYERS"
    return "WEBSOCKET_TRANSPORT_BACKENDS"


@register(TAG)
def check_carried_over(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Channels settings a moved project still has, where they do not mean here what
    they meant there."""
    from django.apps import apps
    from django.conf import settings

    results: list[Warning] = []
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    explicit = getattr(settings, "WEBSOCKET_TRANSPORT_BACKENDS", None)
    if layers and explicit is not None:
        results.append(
            Warning(
                "CHANNEL_LAYERS and WEBSOCKET_TRANSPORT_BACKENDS are both set: django-ws "
                "uses WEBSOCKET_TRANSPORT_BACKENDS and ignores CHANNEL_LAYERS",
                hint="delete CHANNEL_LAYERS once WEBSOCKET_TRANSPORT_BACKENDS says what it should",
                id="django_ws.W004",
            )
        )
    elif isinstance(layers, dict):
        for alias, entry in layers.items():
            backend = entry.get("BACKEND") if isinstance(entry, dict) else None
            if backend in conf.CHANNELS_REDIS:
                config = entry.get("CONFIG") or {}
                dropped = sorted(set(config) - conf.carried_config_keys())
                results.append(
                    Warning(
                        f"CHANNEL_LAYERS[{alias!r}] uses {backend}: django-ws has no Redis "
                        "transport and serves this alias with its embedded broker, which "
                        "reaches one machine only"
                        + (f"; its CONFIG keys {dropped} are not used" if dropped else ""),
                        hint=f"for several machines, set WEBSOCKET_TRANSPORT_BACKENDS[{alias!r}]"
                        " = {'BACKEND': 'django_ws_client.transport.GRPCTransportLayer', "
                        "'CONFIG': {'brokers': [...]}} and delete CHANNEL_LAYERS",
                        id="django_ws.W003",
                    )
                )
    if getattr(settings, "ASGI_APPLICATION", None):
        results.append(
            Warning(
                f"ASGI_APPLICATION = {settings.ASGI_APPLICATION!r} is not read by django-ws: "
                "websocket routes come from WEBSOCKET_ROUTE_MODULE, and pages from Django's "
                "own server (runserver, or your WSGI/ASGI server)",
                hint="set WEBSOCKET_ROUTE_MODULE to your routing module (its "
                "'websocket_urlpatterns' work as they are) and delete ASGI_APPLICATION, or "
                "silence this check if an ASGI server still serves your pages from it",
                id="django_ws.W005",
            )
        )
    provider = _runserver_provider(apps.get_app_configs())
    if provider is not None and provider != "django_ws_client":
        results.append(
            Warning(
                f"runserver comes from {provider!r}, listed ahead of 'django_ws_client' in "
                "INSTALLED_APPS: it serves pages only, so websockets on the same address "
                "answer 404",
                hint=f"list 'django_ws_client' above {provider!r} in INSTALLED_APPS (and "
                "remove 'daphne' and 'channels')",
                id="django_ws.W006",
            )
        )
    return results


@register(TAG)
def check_routes(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from django_ws_client.routing import load_urlpatterns

    module = conf.route_module()
    if not module:
        return [
            Error(
                "WEBSOCKET_ROUTE_MODULE is not set",
                hint="name the module whose 'urlpatterns' (or Channels' "
                "'websocket_urlpatterns') route websocket paths, e.g. 'my_project.routing'",
                id="django_ws.E003",
            )
        ]
    try:
        load_urlpatterns(module)
    except Exception as exc:
        return [
            Error(f"WEBSOCKET_ROUTE_MODULE {module!r} cannot be loaded: {exc}", id="django_ws.E003")
        ]
    return []


@register(TAG)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    results: list[Error | Warning] = []
    paths = conf.middleware_paths()
    for path in paths:
        try:
            import_path(path)
        except ImportError as exc:
            results.append(
                Error(
                    f"WEBSOCKET_MIDDLEWARE entry {path!r} does not import: {exc}",
                    id="django_ws.E004",
                )
            )
    if not any(p.endswith("origin.OriginMiddleware") for p in paths):
        results.append(
            Warning(
                "WEBSOCKET_MIDDLEWARE has no origin check: any web page can open websockets "
                "to this server with its visitors' cookies",
                hint="add 'django_ws_client.middlewares.origin.OriginMiddleware'",
                id="django_ws.W001",
            )
        )
    return results


@register(TAG)
def check_server(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from django.conf import settings

    server = getattr(settings, "WEBSOCKET_SERVER", {})
    if not isinstance(server, dict):
        return [Error("WEBSOCKET_SERVER must be a dict", id="django_ws.E005")]
    unknown = sorted(set(server) - SERVER_KEYS)
    if unknown:
        return [
            Error(
                f"WEBSOCKET_SERVER has unknown keys {unknown}",
                hint=f"known keys: {sorted(SERVER_KEYS)}",
                id="django_ws.E005",
            )
        ]
    return _check_runtime_keys()


def _check_runtime_keys() -> list[Error]:
    """EVENT_LOOP (a known loop, and uvloop importable when named), EAGER_TASKS and
    BROKER_IN_WORKER."""
    from django_ws_edge.options import (
        broker_in_worker_setting,
        eager_tasks_setting,
        event_loop_setting,
    )

    errors: list[Error] = []
    for read, hint in (
        (
            event_loop_setting,
            "'auto' (uvloop when installed, else asyncio), 'asyncio', or 'uvloop' with "
            "pip install 'django-ws-grpc[uvloop]'",
        ),
        (eager_tasks_setting, "True or False (eager tasks need Python 3.12+; off on 3.11)"),
        (broker_in_worker_setting, "True or False (it applies to one worker, -w 1)"),
    ):
        try:
            read()
        except ValueError as exc:
            errors.append(Error(str(exc), hint=hint, id="django_ws.E005"))
    return errors


def _unwritable(directory: str) -> str | None:
    """Why ``directory`` cannot take the workers' metrics files, or None."""
    if not os.path.isdir(directory):
        return "does not exist" if not os.path.exists(directory) else "is not a directory"
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return f"is not writable ({exc.strerror or exc})"
    return None


@register(TAG)
def check_metrics_directory(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """The websocket server keeps its workers' metrics in files under
    PROMETHEUS_MULTIPROC_DIR (or the temp dir): say so at start-up when they cannot
    be written, instead of a traceback or a worker dying later."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    directory = configured or tempfile.gettempdir()
    problem = _unwritable(directory)
    if problem and configured:
        return [
            Error(
                f"PROMETHEUS_MULTIPROC_DIR={configured!r} {problem}: the websocket server "
                "keeps its workers' metrics there",
                hint="create it as a directory this user can write (an emptyDir in "
                "Kubernetes), or unset it to use the temp dir",
                id="django_ws.E006",
            )
        ]
    if problem:
        return [
            Warning(
                f"the temp dir {directory!r} {problem}: the websocket server's workers will "
                "keep their metrics in memory, and /metrics will show only the "
                "supervisor's counters",
                hint="set TMPDIR or PROMETHEUS_MULTIPROC_DIR to a writable directory",
                id="django_ws.W002",
            )
        ]
    free = shutil.disk_usage(directory).free
    if free < METRICS_MIN_FREE_BYTES:
        return [
            Warning(
                f"the metrics directory {directory!r} has {free // 1024} KiB free: metric "
                "values that do not fit are kept in memory and missing from /metrics "
                "(counted in django_ws_edge_metrics_degraded_total)",
                hint="give it more room (the chart's /tmp emptyDir sizeLimit) or point "
                "PROMETHEUS_MULTIPROC_DIR elsewhere",
                id="django_ws.W002",
            )
        ]
    return []


def _routed_consumers(patterns: list[Any]) -> list[type]:
    """The consumer classes the websocket routes point at (nested includes too)."""
    from django.urls import URLResolver

    from django_ws_client.consumers import AsyncConsumer, ConsumerHandler

    found: list[type] = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            found += _routed_consumers(list(pattern.url_patterns))
            continue
        target = getattr(pattern, "callback", None)
        if isinstance(target, ConsumerHandler):
            found.append(target.consumer_class)
        elif isinstance(target, AsyncConsumer):
            found.append(type(target))
    return found


@register(TAG)
def check_presence(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """Presence used where it was not opted in to, or configured so that it fails."""
    from django_ws_client.presence import is_presence_group
    from django_ws_client.routing import load_urlpatterns
    from django_ws_client.transport.config import parse_config

    results: list[Error | Warning] = []
    user_groups = getattr(settings, "WEBSOCKET_USER_GROUPS", True)
    if not isinstance(user_groups, bool):
        results.append(
            Error(
                f"WEBSOCKET_USER_GROUPS must be True or False, got {user_groups!r}",
                id="django_ws.E021",
            )
        )
    configs = {}
    for alias, entry in conf.transport_backends().items():
        try:
            configs[alias] = parse_config((entry or {}).get("CONFIG"), alias)
        except (InvalidChannelLayerError, AttributeError, TypeError):
            continue  # reported by check_transport (E002)
    for alias, config in configs.items():
        if not config.presence_groups:
            continue
        longest = _longest_default_info()
        if longest > config.presence_info_bytes:
            results.append(
                Warning(
                    f"WEBSOCKET_TRANSPORT_BACKENDS[{alias!r}]['CONFIG']['presence_info_bytes'] "
                    f"is {config.presence_info_bytes}, but the default presence info of a user "
                    f"with the longest names the user model allows is {longest} bytes: such "
                    "users would fail to join presence groups (PresenceInfoTooLarge)",
                    hint=f"raise presence_info_bytes to at least {longest}, or override "
                    "presence_info() to keep it short",
                    id="django_ws.W020",
                )
            )
    module = conf.route_module()
    if not module:
        return results
    try:
        consumers = _routed_consumers(load_urlpatterns(module))
    except Exception:
        return results  # reported by check_routes (E003)
    for consumer in consumers:
        alias = getattr(consumer, "channel_layer_alias", "default")
        wanted = configs.get(alias)
        for group in getattr(consumer, "presence_groups", ()):
            if wanted is None or not is_presence_group(wanted, group):
                results.append(
                    Error(
                        f"{consumer.__module__}.{consumer.__qualname__}.presence_groups names "
                        f"{group!r}, which did not opt in to presence",
                        hint=f"add {group!r} (or a pattern matching it) to "
                        f"WEBSOCKET_TRANSPORT_BACKENDS[{alias!r}]['CONFIG']['presence_groups']",
                        id="django_ws.E020",
                    )
                )
    return results


def _longest_default_info() -> int:
    """Bytes of the default presence info (``{"id", "name"}``) for a user whose names
    are as long as the user model allows (0 without django.contrib.auth)."""
    import json

    try:
        from django.contrib.auth import get_user_model

        model = get_user_model()
    except Exception:
        return 0
    lengths = 0
    for name in ("first_name", "last_name"):
        try:
            lengths += model._meta.get_field(name).max_length or 0
        except Exception:
            continue
    username = getattr(model, "USERNAME_FIELD", "username")
    with contextlib.suppress(Exception):
        lengths = max(lengths + 1, model._meta.get_field(username).max_length or 0)
    # Counted as ASCII names (a non-ASCII character takes 2 to 4 bytes of UTF-8).
    return len(json.dumps({"id": 10**18, "name": ""}, separators=(",", ":"))) + lengths
