"""Positions in a group: what a client keeps to catch up after a reconnect.

The broker that owns a group numbers its messages (offsets) within an epoch that
changes whenever it lost the group's history. A consumer knows the position of the last
event it got from each group (``self.group_position(group)``), can hand it to its
client as an opaque string, and on reconnect can join the group from it
(``group_add(group, channel, since=position)``): the missed events are dispatched first,
in order, then live ones. When that cannot be done, the consumer gets a ``group.gap``
event instead (see :data:`GAP_EVENT_TYPE`).
"""

from __future__ import annotations

GAP_EVENT_TYPE = "group.gap"
"""The event a consumer gets (handler ``group_gap``) when events of a group may have
been missed and cannot be replayed: ``{"type": "group.gap", "group": ..., "reason": ...}``
with reason ``"history_lost"`` (the broker restarted without its saved state, or the
position belongs to no epoch it knows) or ``"too_old"`` (older than the history kept)."""

GAP_REASONS = {"epoch": "history_lost", "trimmed": "too_old"}
"""The broker's word for why a position could not be recovered -> the event's reason."""


def format_position(epoch: int, offset: int) -> str:
    """The opaque string a client keeps: ``<epoch in hex>.<offset>``."""
    return f"{epoch:x}.{offset}"


def parse_position(position: str) -> tuple[int, int]:
    """(epoch, offset) from a string made by :func:`format_position`; ValueError with
    what was wrong otherwise (it usually comes from a client: never trust it)."""
    if not isinstance(position, str):
        raise ValueError(f"a position is a string like '3f2a.17', got {type(position).__name__}")
    epoch_text, dot, offset_text = position.partition(".")
    try:
        if not dot or len(position) > 40:
            raise ValueError
        epoch, offset = int(epoch_text, 16), int(offset_text)
    except ValueError:
        raise ValueError(
            f"not a position: {position[:40]!r} (expected '<hex epoch>.<offset>')"
        ) from None
    if epoch <= 0 or offset < 0 or epoch >= 1 << 64 or offset >= 1 << 64:
        raise ValueError(f"not a position: {position!r} (out of range)")
    return epoch, offset
