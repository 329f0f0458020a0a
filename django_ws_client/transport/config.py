"""Reading and checking ``WEBSOCKET_TRANSPORT_BACKENDS[alias]["CONFIG"]``.

Three ways to name brokers, all resolving to one address per shard ordinal:

* ``"address": "unix:/run/ws.sock"`` or ``"host:port"``: one broker (the seed's form);
* ``"brokers": ["host:port", ...]``: list position is the ordinal;
* ``"brokers": "broker-{ordinal}.broker-headless:50051", "shards": N``: a StatefulSet.

When CONFIG names no broker, the environment may: ``DJANGO_WS_BROKERS`` (a template or
a comma-separated list), ``DJANGO_WS_SHARDS``, and ``DJANGO_WS_TLS_CA`` /
``DJANGO_WS_TLS_CERT`` / ``DJANGO_WS_TLS_KEY`` (how the Helm chart configures edges and
app pods without touching the project's settings). ``DJANGO_WS_SECRET_FILE`` gives the
role secret file whenever CONFIG has no ``secret_file``.

With nothing configured, the broker is embedded: a unix socket in this user's private
directory (:mod:`~django_ws_client.transport.private_socket`) whose name derives from
the settings module, so the websocket server and the project's other processes (views,
tasks) of the same user find the same one, and no other user can.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django_ws_client.exceptions import InvalidChannelLayerError
from django_ws_client.transport.private_socket import socket_directory
from django_ws_proto.codec import DEFAULT_MAX_EVENT_BYTES
from django_ws_proto.credentials import SecretFileError, read_secrets

_HOST_PORT_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})")

CONFIG_KEYS = frozenset(
    {
        "address",
        "brokers",
        "shards",
        "tls",
        "secret_file",
        "timeout",
        "connect_timeout",
        "capacity",
        "expiry",
        "group_expiry",
        "max_event_bytes",
        "publish_timeout",
        "max_pending_publishes",
        "max_pending_bytes",
        "presence_groups",
        "presence_info_bytes",
        "presence_grace_seconds",
        "max_group_members",
        "history_size",
        "history_seconds",
        "history_bytes",
    }
)
"""The keys CONFIG understands; others are kept in ``TransportConfig.extra``."""

DEFAULT_CAPACITY = 100
"""Events waiting in a ``new_channel()`` receive queue before further sends to it fail,
and frames from a client waiting for its consumer before the server stops reading from
its socket (Channels' default). Channel layer events for consumers are bounded in bytes
instead (``WEBSOCKET_SERVER['SLOW_CLIENT_BYTES']``), so bursts are not taken for slowness."""

DEFAULT_PUBLISH_TIMEOUT = 30.0
"""Seconds a send waits for an unreachable broker (a restart in a rolling upgrade takes
seconds) before it raises ``BrokerUnavailable``."""

DEFAULT_MAX_PENDING_PUBLISHES = 10_000
"""Publishes to one broker kept until it acknowledges them; past it, sends wait."""

DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024
"""Bytes of publishes to one broker kept until it acknowledges them; past it, sends wait."""

DEFAULT_PRESENCE_INFO_BYTES = 1024
"""Largest presence info dict (as compact JSON) a member may join with."""

MAX_PRESENCE_INFO_BYTES = 16 * 1024
"""The most ``presence_info_bytes`` may be: what the broker keeps per member."""


@dataclass(frozen=True)
class TLSConfig:
    """TLS for edge and client to broker gRPC: CA to verify the broker, and optionally
    a client certificate for mutual TLS."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class TransportConfig:
    """A parsed, checked transport CONFIG."""

    brokers: tuple[str, ...]
    shards: int
    addresses_template: str | None = None
    tls: TLSConfig | None = None
    secret_file: Path | None = None
    """The role secret this process sends to brokers (its first line): the edge secret
    in websocket servers, the publisher secret in other Django processes."""
    timeout: float = 5.0
    connect_timeout: float = 5.0
    capacity: int = DEFAULT_CAPACITY
    expiry: float = 60.0
    group_expiry: float = 86400.0
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT
    max_pending_publishes: int = DEFAULT_MAX_PENDING_PUBLISHES
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    presence_groups: tuple[str, ...] = ()
    """Glob patterns (``fnmatch``) of the groups that opted in to presence."""
    presence_info_bytes: int = DEFAULT_PRESENCE_INFO_BYTES
    presence_grace_seconds: float | None = None
    """For the embedded broker: its ``--presence-grace-seconds`` (None: its default)."""
    max_group_members: int | None = None
    """For the embedded broker: its ``--max-group-members`` (None: its default)."""
    history_size: int | None = None
    """For the embedded broker: its ``--history-size``, messages kept per group for
    recovery (None: its default, 1,000; 0: none)."""
    history_seconds: float | None = None
    """For the embedded broker: its ``--history-seconds`` (None: its default, 300)."""
    history_bytes: int | None = None
    """For the embedded broker: its ``--history-bytes`` in all (None: its default, 64 MiB)."""
    embedded: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def address_for(self, ordinal: int, shards: int | None = None) -> str:
        """The gRPC target of broker ``ordinal`` (also for ordinals past the current
        shard count, when the config can name them: a template or a longer list)."""
        if self.addresses_template is not None:
            return self.addresses_template.format(ordinal=ordinal)
        if ordinal < len(self.brokers):
            return self.brokers[ordinal]
        raise InvalidChannelLayerError(
            f"no broker address for ordinal {ordinal}: 'brokers' lists {len(self.brokers)}"
        )

    @property
    def unix_path(self) -> Path | None:
        """The socket path when this is a one-broker unix address."""
        if len(self.brokers) == 1 and self.brokers[0].startswith("unix:"):
            return Path(self.brokers[0][len("unix:") :].removeprefix("//"))
        return None


def default_broker_address() -> str:
    """The embedded broker's socket: stable for one project, distinct between projects,
    in a directory only this user can enter."""
    from django.conf import settings

    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    base_dir = getattr(settings, "BASE_DIR", None) or Path.cwd()
    digest = hashlib.blake2b(f"{settings_module}|{base_dir}".encode(), digest_size=6).hexdigest()
    return f"unix:{socket_directory() / f'broker-{digest}.sock'}"


def check_address(address: object, setting: str) -> str:
    """Return a gRPC target for ``address`` or raise naming the setting and the forms."""
    if isinstance(address, str):
        if address.startswith(("unix:", "unix-abstract:")) and len(address.split(":", 1)[1]) > 0:
            return address
        match = _HOST_PORT_RE.fullmatch(address)
        if match and 0 < int(match.group(2)) < 65536:
            return address
    raise InvalidChannelLayerError(
        f"{setting}: {address!r} is not a broker address; use 'unix:/path/to.sock', "
        "'unix-abstract:name' or 'host:port'"
    )


def _number(config: Mapping[str, Any], key: str, default: float, setting: str) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidChannelLayerError(
            f"{setting}['{key}'] must be a positive number, got {value!r}"
        )
    return float(value)


def _optional_int(config: Mapping[str, Any], key: str, least: int, setting: str) -> int | None:
    """An embedded broker's integer setting: None (its default) or an int >= ``least``."""
    value = config.get(key)
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or value < least
    ):
        raise InvalidChannelLayerError(
            f"{setting}[{key!r}] must be an int >= {least}, got {value!r}"
        )
    return value


def _optional_seconds(config: Mapping[str, Any], key: str, setting: str) -> float | None:
    """An embedded broker's duration: None (its default) or a number of seconds >= 0."""
    value = config.get(key)
    if value is not None and (
        not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0
    ):
        raise InvalidChannelLayerError(
            f"{setting}[{key!r}] must be a number of seconds >= 0, got {value!r}"
        )
    return None if value is None else float(value)


def _tls(config: Mapping[str, Any], setting: str) -> TLSConfig | None:
    tls = config.get("tls")
    if tls is None:
        return None
    if not isinstance(tls, Mapping) or "ca" not in tls:
        raise InvalidChannelLayerError(
            f"{setting}['tls'] must be a dict with at least 'ca' (and 'cert' + 'key' for "
            "mutual TLS)"
        )
    if ("cert" in tls) != ("key" in tls):
        raise InvalidChannelLayerError(f"{setting}['tls']: 'cert' and 'key' go together")
    return TLSConfig(
        ca=Path(tls["ca"]),
        cert=Path(tls["cert"]) if "cert" in tls else None,
        key=Path(tls["key"]) if "key" in tls else None,
        server_name=tls.get("server_name"),
    )


def _secret_file(config: Mapping[str, Any], setting: str) -> Path | None:
    value = config.get("secret_file")
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value):
        raise InvalidChannelLayerError(
            f"{setting}['secret_file'] must be the path of a file holding the role secret "
            f"(one a line; the first is sent), got {type(value).__name__}"
        )
    path = Path(value)
    try:
        read_secrets(path, f"{setting}['secret_file']")
    except SecretFileError as exc:
        raise InvalidChannelLayerError(str(exc)) from None
    return path


def _with_environment(config: dict[str, Any]) -> dict[str, Any]:
    """Fill broker addresses and TLS from DJANGO_WS_* variables when CONFIG has none."""
    wait = os.environ.get("DJANGO_WS_CONNECT_TIMEOUT", "").strip()
    if wait and "connect_timeout" not in config:
        try:
            config["connect_timeout"] = float(wait)
        except ValueError:
            raise InvalidChannelLayerError(
                f"DJANGO_WS_CONNECT_TIMEOUT must be a number of seconds, got {wait!r}"
            ) from None
    secret_file = os.environ.get("DJANGO_WS_SECRET_FILE", "").strip()
    if secret_file and "secret_file" not in config:
        config["secret_file"] = secret_file
    if "address" in config or "brokers" in config:
        return config
    brokers = os.environ.get("DJANGO_WS_BROKERS", "").strip()
    if not brokers:
        return config
    if "{ordinal}" in brokers:
        config["brokers"] = brokers
    else:
        config["brokers"] = [b.strip() for b in brokers.split(",") if b.strip()]
    shards = os.environ.get("DJANGO_WS_SHARDS", "").strip()
    if shards:
        try:
            config["shards"] = int(shards)
        except ValueError:
            raise InvalidChannelLayerError(
                f"DJANGO_WS_SHARDS must be a number, got {shards!r}"
            ) from None
    if "tls" not in config and os.environ.get("DJANGO_WS_TLS_CA"):
        tls = {"ca": os.environ["DJANGO_WS_TLS_CA"]}
        if os.environ.get("DJANGO_WS_TLS_CERT"):
            tls["cert"] = os.environ["DJANGO_WS_TLS_CERT"]
            tls["key"] = os.environ.get("DJANGO_WS_TLS_KEY", "")
        config["tls"] = tls
    return config


def _fill_template(template: str, ordinal: int, setting: str) -> str:
    try:
        return template.format(ordinal=ordinal)
    except (KeyError, IndexError, AttributeError, TypeError, ValueError) as exc:
        raise InvalidChannelLayerError(
            f"{setting}['brokers']: the template {template!r} cannot be filled in "
            f"({type(exc).__name__}: {exc}); '{{ordinal}}' must be its only placeholder"
        ) from None


def parse_config(
    config: Mapping[str, Any] | None, alias: str = "default", *, setting: str | None = None
) -> TransportConfig:
    """Parse a CONFIG dict; every error names the setting (``setting``, by default the
    alias' entry in WEBSOCKET_TRANSPORT_BACKENDS) and what is wrong."""
    setting = setting or f"WEBSOCKET_TRANSPORT_BACKENDS['{alias}']['CONFIG']"
    if config is not None and not isinstance(config, Mapping):
        raise InvalidChannelLayerError(f"{setting} must be a dict")
    config = _with_environment(dict(config or {}))
    if "address" in config and "brokers" in config:
        raise InvalidChannelLayerError(f"{setting}: give 'address' or 'brokers', not both")
    template: str | None = None
    brokers: tuple[str, ...]
    embedded = False
    brokers_value = config.get("brokers")
    if brokers_value is None:
        address = config.get("address")
        if address is None:
            address = default_broker_address()
            embedded = True
        brokers = (check_address(address, f"{setting}['address']"),)
        embedded = embedded or brokers[0].startswith("unix:")
        shards = 1
    elif isinstance(brokers_value, str):
        if "{ordinal}" not in brokers_value:
            raise InvalidChannelLayerError(
                f"{setting}['brokers'] as a string is a template and must contain "
                "'{ordinal}', e.g. 'broker-{ordinal}.broker-headless:50051'"
            )
        shards_value = config.get("shards")
        if not isinstance(shards_value, int) or isinstance(shards_value, bool) or shards_value < 1:
            raise InvalidChannelLayerError(
                f"{setting}['shards'] must be the number of brokers (>= 1) when 'brokers' "
                f"is a template, got {shards_value!r}"
            )
        template = brokers_value
        shards = shards_value
        brokers = tuple(
            check_address(_fill_template(template, k, setting), f"{setting}['brokers']")
            for k in range(shards)
        )
    elif isinstance(brokers_value, (list, tuple)) and brokers_value:
        brokers = tuple(
            check_address(a, f"{setting}['brokers'][{i}]") for i, a in enumerate(brokers_value)
        )
        shards_value = config.get("shards", len(brokers))
        if (
            not isinstance(shards_value, int)
            or isinstance(shards_value, bool)
            or not 1 <= shards_value <= len(brokers)
        ):
            raise InvalidChannelLayerError(
                f"{setting}['shards'] must be between 1 and the {len(brokers)} listed brokers, "
                f"got {shards_value!r}"
            )
        shards = shards_value
    else:
        raise InvalidChannelLayerError(
            f"{setting}['brokers'] must be a non-empty list of addresses or a template "
            f"string, got {brokers_value!r}"
        )
    capacity = config.get("capacity", DEFAULT_CAPACITY)
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise InvalidChannelLayerError(
            f"{setting}['capacity'] must be an int >= 1, got {capacity!r}"
        )
    max_event_bytes = config.get("max_event_bytes", DEFAULT_MAX_EVENT_BYTES)
    if not isinstance(max_event_bytes, int) or max_event_bytes < 64:
        raise InvalidChannelLayerError(
            f"{setting}['max_event_bytes'] must be an int >= 64, got {max_event_bytes!r}"
        )
    pending: dict[str, int] = {}
    for key, default, floor in (
        ("max_pending_publishes", DEFAULT_MAX_PENDING_PUBLISHES, 1),
        ("max_pending_bytes", DEFAULT_MAX_PENDING_BYTES, 1024),
    ):
        value = config.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < floor:
            raise InvalidChannelLayerError(
                f"{setting}[{key!r}] must be an int >= {floor}, got {value!r}"
            )
        pending[key] = value
    presence_groups = config.get("presence_groups", ())
    if isinstance(presence_groups, str) or not all(
        isinstance(p, str) and p for p in presence_groups
    ):
        raise InvalidChannelLayerError(
            f"{setting}['presence_groups'] must be a list of group names or glob patterns "
            f"(e.g. ['chat_*']), got {presence_groups!r}"
        )
    info_bytes = config.get("presence_info_bytes", DEFAULT_PRESENCE_INFO_BYTES)
    if (
        not isinstance(info_bytes, int)
        or isinstance(info_bytes, bool)
        or not 2 <= info_bytes <= MAX_PRESENCE_INFO_BYTES
    ):
        raise InvalidChannelLayerError(
            f"{setting}['presence_info_bytes'] must be an int from 2 to "
            f"{MAX_PRESENCE_INFO_BYTES} (what the broker keeps per member), got {info_bytes!r}"
        )
    return TransportConfig(
        brokers=brokers,
        shards=shards,
        addresses_template=template,
        tls=_tls(config, setting),
        secret_file=_secret_file(config, setting),
        timeout=_number(config, "timeout", 5.0, setting),
        connect_timeout=_number(config, "connect_timeout", 5.0, setting),
        capacity=capacity,
        expiry=_number(config, "expiry", 60.0, setting),
        group_expiry=_number(config, "group_expiry", 86400.0, setting),
        max_event_bytes=max_event_bytes,
        publish_timeout=_number(config, "publish_timeout", DEFAULT_PUBLISH_TIMEOUT, setting),
        max_pending_publishes=pending["max_pending_publishes"],
        max_pending_bytes=pending["max_pending_bytes"],
        presence_groups=tuple(presence_groups),
        presence_info_bytes=info_bytes,
        # The embedded broker's own settings (a separate broker takes its flags).
        presence_grace_seconds=_optional_seconds(config, "presence_grace_seconds", setting),
        max_group_members=_optional_int(config, "max_group_members", 1, setting),
        history_size=_optional_int(config, "history_size", 0, setting),
        history_seconds=_optional_seconds(config, "history_seconds", setting),
        history_bytes=_optional_int(config, "history_bytes", 0, setting),
        embedded=embedded,
        extra={k: v for k, v in config.items() if k not in CONFIG_KEYS},
    )
