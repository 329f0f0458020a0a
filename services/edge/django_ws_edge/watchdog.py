"""Warns when a consumer blocks the event loop, naming the consumer.

One blocking call in an async handler (``time.sleep``, sync ORM use, a CPU-heavy loop)
stalls every connection of the worker. asyncio's own slow-callback detection only runs
in debug mode; this watchdog is cheap enough to stay on: the loop stamps a heartbeat a
few times per blocking threshold, and a thread notices when the stamp is late. The
consumer's task is known by its port (``describe_task``), so the warning says which
consumer and which event held the loop.

The same name goes to the supervisor (``on_blocked``): the loop's own heartbeats to the
supervisor stop while it is blocked, and this thread still runs, so the supervisor can
say which consumer was running when it replaces a wedged worker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from django_ws_client.connection import describe_task
from django_ws_edge import metrics

logger = logging.getLogger("django_ws.edge")


class LoopWatchdog:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        on_blocked: Callable[[str, float], None] | None = None,
    ) -> None:
        self.loop = loop
        self.threshold = threshold
        self.on_blocked = on_blocked
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="django-ws-loop-watchdog", daemon=True
        )
        self._handle: asyncio.TimerHandle | None = None
        self.warnings = 0

    def start(self) -> None:
        self._heartbeat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()
        self._handle = self.loop.call_later(self.threshold / 4, self._heartbeat)

    def _watch(self) -> None:
        warned_for = 0.0
        while not self._stop.wait(self.threshold / 4):
            beat = self._beat
            lag = time.monotonic() - beat
            if lag > self.threshold and beat != warned_for:
                warned_for = beat
                task = asyncio.current_task(self.loop)
                culprit = (
                    describe_task(task) if task is not None else "a callback outside any task"
                )
                self.warnings += 1
                metrics.LOOP_BLOCKED.inc()
                logger.warning(
                    "the event loop has been blocked for %.2fs by %s: every connection of this "
                    "worker waits; move blocking work to database_sync_to_async or a thread",
                    lag,
                    culprit,
                )
                if self.on_blocked is not None:
                    self.on_blocked(culprit, lag)
