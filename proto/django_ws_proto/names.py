"""Rules for group names, channel names and event types.

They follow Django Channels' rules so that names valid there are valid here, and they
are checked on both sides of the wire: by the client before anything is sent (so the
caller gets a ``ValueError`` naming the rule) and by the broker (so a client that skips
the check cannot plant names the others would refuse).
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 100
"""Longest group name, channel name or event type, in characters (as in Channels)."""

_GROUP_RE = re.compile(r"[A-Za-z0-9\-_.]+")
_CHANNEL_RE = re.compile(r"[A-Za-z0-9\-_.]+(![A-Za-z0-9\-_.]*)?")
_TYPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")

GROUP_RULE = (
    f"a group name must be 1 to {MAX_NAME_LENGTH} characters of ASCII letters, digits, "
    "hyphens, underscores or periods"
)
CHANNEL_RULE = (
    f"a channel name must be 1 to {MAX_NAME_LENGTH} characters of ASCII letters, digits, "
    "hyphens, underscores or periods, optionally followed by '!' and more of the same"
)
TYPE_RULE = (
    f"an event type must be 1 to {MAX_NAME_LENGTH} characters, start with an ASCII letter "
    "and contain only ASCII letters, digits, underscores or periods (periods become "
    "underscores to name the handler method)"
)


SHOWN_CHARACTERS = 120
"""The most of a rejected name an error shows, counted after escaping."""


def _shown(text: str) -> str:
    """A rejected name as its error shows it: the repr of its start, cut to
    ``SHOWN_CHARACTERS`` after escaping, so an error line (and a log line) stays short
    whatever a client sent; a character can take ten to escape."""
    shown = repr(text[:SHOWN_CHARACTERS])
    if len(shown) <= SHOWN_CHARACTERS:
        return shown
    return shown[: SHOWN_CHARACTERS - 3] + "..."


def group_name_error(name: object) -> str | None:
    """Why ``name`` is not a valid group name, or None when it is."""
    if not isinstance(name, str):
        return f"{GROUP_RULE}; got {type(name).__name__}"
    if not 0 < len(name) <= MAX_NAME_LENGTH or not _GROUP_RE.fullmatch(name):
        return f"{GROUP_RULE}; got {_shown(name)}"
    return None


def channel_name_error(name: object) -> str | None:
    """Why ``name`` is not a valid channel name, or None when it is."""
    if not isinstance(name, str):
        return f"{CHANNEL_RULE}; got {type(name).__name__}"
    if not 0 < len(name) <= MAX_NAME_LENGTH or not _CHANNEL_RE.fullmatch(name):
        return f"{CHANNEL_RULE}; got {_shown(name)}"
    return None


def event_type_error(event_type: object) -> str | None:
    """Why ``event_type`` is not a valid event type, or None when it is."""
    if not isinstance(event_type, str):
        return f"{TYPE_RULE}; got {type(event_type).__name__}"
    if not 0 < len(event_type) <= MAX_NAME_LENGTH or not _TYPE_RE.fullmatch(event_type):
        return f"{TYPE_RULE}; got {_shown(event_type)}"
    return None


def require_group_name(name: object) -> str:
    """Return ``name`` when it is a valid group name, else raise ``ValueError``."""
    error = group_name_error(name)
    if error:
        raise ValueError(error)
    return name  # type: ignore[return-value]


def require_channel_name(name: object) -> str:
    """Return ``name`` when it is a valid channel name, else raise ``ValueError``."""
    error = channel_name_error(name)
    if error:
        raise ValueError(error)
    return name  # type: ignore[return-value]


def require_event_type(event_type: object) -> str:
    """Return ``event_type`` when valid, else raise ``ValueError``."""
    error = event_type_error(event_type)
    if error:
        raise ValueError(error)
    return event_type  # type: ignore[return-value]


def handler_name(event_type: str) -> str:
    """The consumer method that handles ``event_type``: periods become underscores."""
    return event_type.replace(".", "_")


def channel_home(channel: str) -> str:
    """The part of a channel name that names the process holding it.

    Channel names are ``<process>!<connection>``; every channel of one edge worker
    shares the part before ``!``, so they all route through one broker.
    """
    return channel.partition("!")[0]
