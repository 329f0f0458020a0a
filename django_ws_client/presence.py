"""Presence, per-user groups and the pieces every layer shares for them.

A group opts in to presence through its layer's ``CONFIG['presence_groups']`` (names or
glob patterns). Its members join with an *info* dict (by default the id and display
name of the consumer's authenticated ``scope["user"]``); the group's owning broker
dedupes them per user, counts each user's connections and sends the group
``presence.join`` / ``presence.leave`` events, coalesced over a grace period.

Per-user sends go to a group named after the user (:func:`user_group`), which an
authenticated consumer joins by itself unless ``WEBSOCKET_USER_GROUPS = False``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from django_ws_client.exceptions import PresenceInfoTooLarge, PresenceNotEnabled

if TYPE_CHECKING:
    from django_ws_client.transport.config import TransportConfig

PRESENCE_JOIN = "presence.join"
PRESENCE_LEAVE = "presence.leave"
PRESENCE_TYPES = frozenset({PRESENCE_JOIN, PRESENCE_LEAVE})

DEFAULT_PRESENCE_GRACE_SECONDS = 5.0
"""How long a user's last connection may be gone before its ``presence.leave``: the
broker's own default (``--presence-grace-seconds``), which the in-memory layer keeps too."""

USER_GROUP_PREFIX = "user."
"""What a user's group name starts with: ``user.<pk>``."""

_SAFE_ID = re.compile(r"[A-Za-z0-9\-_.]{1,90}")


@dataclass(frozen=True)
class Present:
    """One user present in a group: who, their info dict, and how many connections."""

    user: str
    info: dict[str, Any]
    connections: int


def user_id(user_or_id: Any) -> str:
    """The id of a user (a Django user object, or its primary key as is)."""
    pk = getattr(user_or_id, "pk", user_or_id)
    if (
        pk is None
        or isinstance(pk, bool)
        or (hasattr(user_or_id, "is_authenticated") and not user_or_id.is_authenticated)
    ):
        raise ValueError(f"{user_or_id!r} is not an authenticated user or a user id")
    return str(pk)


def user_group(user_or_id: Any) -> str:
    """The group every connection of a user is in (``user.<pk>``); ids that are not
    plain names (an e-mail as primary key) are hashed into one."""
    pk = user_id(user_or_id)
    if not _SAFE_ID.fullmatch(pk):
        import hashlib

        pk = "h" + hashlib.sha256(pk.encode()).hexdigest()[:40]
    return USER_GROUP_PREFIX + pk


def default_info(scope: dict[str, Any]) -> dict[str, Any] | None:
    """``{"id", "name"}`` of the scope's authenticated user, else None (anonymous
    members are each their own presence entry, keyed by channel)."""
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    name = ""
    full_name = getattr(user, "get_full_name", None)
    if callable(full_name):
        name = full_name() or ""
    if not name:
        get_username = getattr(user, "get_username", None)
        name = get_username() if callable(get_username) else str(user)
    return {"id": user.pk, "name": name}


def is_presence_group(config: TransportConfig, group: str) -> bool:
    """Whether ``group`` opted in to presence (matches ``presence_groups``)."""
    return any(fnmatchcase(group, pattern) for pattern in config.presence_groups)


def require_presence(config: TransportConfig, group: str, alias: str = "default") -> None:
    if not is_presence_group(config, group):
        raise PresenceNotEnabled(
            f"group {group!r} did not opt in to presence: add it (or a pattern such as "
            f"'{group.split('_')[0]}_*') to WEBSOCKET_TRANSPORT_BACKENDS[{alias!r}]['CONFIG']"
            "['presence_groups']"
        )


def encode_info(config: TransportConfig, info: dict[str, Any] | None) -> tuple[str, bytes]:
    """(user key, info as compact JSON) for a presence member; the user key is the
    info's ``id`` (deduplicating that user's connections), or "" for anonymous."""
    if info is None:
        return "", b""
    if not isinstance(info, dict):
        raise TypeError(f"presence info must be a dict, got {type(info).__name__}")
    body = json.dumps(info, separators=(",", ":"), default=str, ensure_ascii=False).encode()
    if len(body) > config.presence_info_bytes:
        raise PresenceInfoTooLarge(
            f"the presence info dict is {len(body)} bytes as JSON, over "
            f"CONFIG['presence_info_bytes'] ({config.presence_info_bytes}): keep it to an "
            "id and a display name, and load the rest from the database"
        )
    user = info.get("id")
    return ("" if user is None else str(user)), body


def decode_present(user: str, info: bytes, connections: int) -> Present:
    try:
        decoded = json.loads(info) if info else {}
    except ValueError:
        decoded = {}
    return Present(user=user, info=decoded, connections=connections)
