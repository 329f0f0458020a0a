"""The seed's group event: ``GroupMessage(type, message=..., params=...)``.

``type`` names the consumer method that handles it (``"chat_message"`` or
``"chat.message"`` both go to ``chat_message``). Channels-style dict events work too;
this class is the seed's shorthand and travels with the same guarantees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django_ws_proto.names import require_event_type


@dataclass(frozen=True, slots=True)
class GroupMessage:
    """A group event: a handler name, a message and free-form params."""

    type: str
    message: Any = None
    params: Any = None

    def __post_init__(self) -> None:
        require_event_type(self.type)

    def __getitem__(self, key: str) -> Any:
        # Lets handlers written for dict events (event["message"]) read it too.
        if key in ("type", "message", "params"):
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default
