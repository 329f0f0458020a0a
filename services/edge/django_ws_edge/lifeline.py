"""Children that end when the supervisor ends, however it ends.

A supervisor stopped by SIGKILL (the OOM killer, ``kill -9``, a crashed container
runtime) runs no code, so it cannot stop its workers and its embedded broker. Left
alone they keep the port, keep the broker's socket answering, and the next start would
use that orphaned broker until it too went away. Two mechanisms end them:

- **A lifeline pipe** (every platform): the supervisor creates one pipe and keeps its
  only write end; every child inherits the read end, and a thread in the child blocks
  reading it. The kernel closes the write end when the supervisor dies, however it dies,
  so the read returns end-of-file: the child stops gracefully, and exits hard after
  :data:`ORPHAN_EXIT_SECONDS` if its event loop is blocked.
- **A parent-death signal** (Linux): ``prctl(PR_SET_PDEATHSIG)`` asks the kernel to send
  SIGTERM when the parent dies, a second path that needs no thread.

This module uses the standard library only: the embedded broker is started through it
(``python -m django_ws_edge.lifeline FD PARENT_PID MODULE ARGS...``) and the broker never
imports Django or the client.
"""

from __future__ import annotations

import ctypes
import logging
import os
import runpy
import signal
import sys
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("django_ws.edge")

ORPHAN_EXIT_SECONDS = 5.0
"""Seconds a child whose supervisor died has to stop gracefully before it exits hard."""

_PR_SET_PDEATHSIG = 1
_ORPHAN_EXIT_CODE = 70


def set_parent_death_signal(signum: int, parent: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when ``parent`` dies (Linux).

    Returns whether the request was made. If ``parent`` died before the request (the
    kernel would then never send the signal), the signal is sent at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)
    return True


def watch_lifeline(
    fd: int, on_gone: Callable[[], None], exit_after: float = ORPHAN_EXIT_SECONDS
) -> threading.Thread:
    """Start a daemon thread that blocks reading ``fd`` until end-of-file, which means
    the supervisor is gone; it then calls ``on_gone`` (from that thread) and exits the
    process hard ``exit_after`` seconds later if it is still running."""

    def run() -> None:
        try:
            while os.read(fd, 64):
                pass  # the supervisor never writes; anything read is ignored
        except OSError:
            pass
        try:
            on_gone()
        except Exception:
            logger.exception("stopping after the supervisor went away failed")
        time.sleep(exit_after)
        os._exit(_ORPHAN_EXIT_CODE)

    thread = threading.Thread(target=run, name="django-ws-lifeline", daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> None:
    """Run ``MODULE`` as ``__main__`` in this process, ended with SIGTERM when the
    supervisor holding the lifeline's write end dies."""
    if len(argv) < 3:
        raise SystemExit("usage: python -m django_ws_edge.lifeline FD PARENT_PID MODULE [ARGS...]")
    fd, parent, module, args = int(argv[0]), int(argv[1]), argv[2], argv[3:]
    set_parent_death_signal(signal.SIGTERM, parent)
    watch_lifeline(fd, lambda: os.kill(os.getpid(), signal.SIGTERM))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
