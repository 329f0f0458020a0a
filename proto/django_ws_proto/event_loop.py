"""Which event loop a process runs: asyncio's own, or uvloop when it is installed.

Edge workers and brokers both run on one of them, chosen as uvicorn chooses: "auto"
(the default) takes uvloop when it imports and asyncio's loop otherwise; "asyncio" and
"uvloop" ask for one. uvloop is an optional extra (``pip install django-ws-grpc[uvloop]``),
so asking for it where it is not installed is an error naming where it was asked for,
never a silent fall back to the other loop.

Shared by the edge and the broker, which is why it lives in the wire package: it
imports neither of them, nor Django.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

EVENT_LOOPS = ("auto", "asyncio", "uvloop")
"""The accepted values of the setting and of ``--event-loop``."""

DEFAULT_EVENT_LOOP = "auto"

T = TypeVar("T")


class EventLoopUnavailable(ValueError):
    """The chosen event loop is unknown, or uvloop was asked for and does not import."""


@dataclass(frozen=True)
class LoopChoice:
    """A resolved choice: the loop's name for logs, and what makes one."""

    name: str  # "uvloop" or "asyncio"
    version: str  # uvloop's version, or "" for asyncio
    factory: Callable[[], asyncio.AbstractEventLoop] | None  # None: asyncio's default

    def describe(self) -> str:
        return f"uvloop {self.version}" if self.version else "asyncio"


def resolve_event_loop(choice: object, where: str) -> LoopChoice:
    """The loop ``choice`` (one of :data:`EVENT_LOOPS`) means here. ``where`` names the
    setting or flag it came from, for the error raised when it is unknown or when
    uvloop was asked for and is not installed."""
    if choice not in EVENT_LOOPS:
        raise EventLoopUnavailable(
            f"{where} must be one of {', '.join(map(repr, EVENT_LOOPS))}, not {choice!r}"
        )
    if choice == "asyncio":
        return LoopChoice("asyncio", "", None)
    try:
        import uvloop
    except ImportError as exc:
        if choice == "auto":
            return LoopChoice("asyncio", "", None)
        raise EventLoopUnavailable(
            f"{where} is 'uvloop' but uvloop does not import ({exc}): install it "
            "(pip install 'django-ws-grpc[uvloop]') or choose 'auto' or 'asyncio'"
        ) from None
    version = str(getattr(uvloop, "__version__", "?"))
    return LoopChoice("uvloop", version, uvloop.new_event_loop)


def running_loop_name() -> str:
    """The name of the loop running now, from its class: what a log line can prove."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], loop: LoopChoice) -> T:
    """``asyncio.run(main)`` on the chosen loop (``asyncio.Runner`` takes a loop
    factory on every Python this supports; ``asyncio.run`` only from 3.12)."""
    with asyncio.Runner(loop_factory=loop.factory) as runner:
        return runner.run(main)
