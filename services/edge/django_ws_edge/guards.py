"""Defences of the websocket port, with no I/O: handshake validation, inbound rate
limits, and log flood control.

Handshakes are validated before any Django code runs, by websockets' own rules (a
throwaway protocol object does the checking), so a plain HTTP request, a browser
visiting the port, or a malformed upgrade never reaches middleware or consumers.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from websockets.http11 import Request, Response
from websockets.server import ServerProtocol


def invalid_handshake(request: Request) -> Response | None:
    """The HTTP error response for a request that is not a valid websocket handshake
    (400, 405, 426 or 505, with websockets' explanation), or None when it is valid."""
    checker = ServerProtocol()
    response = checker.accept(request)
    return None if response.status_code == 101 else response


class TokenBucket:
    """Allows ``rate`` events per second on average, with bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = time.monotonic() if now is None else now

    def allow(self, now: float | None = None) -> bool:
        """Take one token; False when the bucket is empty (the event is over the limit)."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class SourceLogLimiter:
    """Says whether to log about a source: at most once per ``interval`` per source,
    remembering at most ``max_sources`` of them, so that a flood of bad requests can
    fill neither the log nor memory."""

    def __init__(self, interval: float = 1.0, max_sources: int = 10_000) -> None:
        self.interval = interval
        self.max_sources = max_sources
        self._last: OrderedDict[str, float] = OrderedDict()
        self.suppressed = 0

    def allow(self, source: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        last = self._last.get(source)
        if last is not None and now - last < self.interval:
            self.suppressed += 1
            return False
        self._last[source] = now
        self._last.move_to_end(source)
        while len(self._last) > self.max_sources:
            self._last.popitem(last=False)
        return True
