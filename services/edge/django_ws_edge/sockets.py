"""Listening sockets for ``-b HOST:PORT`` and ``-b unix:PATH``.

TCP: every worker binds its own socket with ``SO_REUSEPORT`` so the kernel spreads new
connections over the workers; the supervisor binds one too (without listening) to
report a busy or bad address at once and to hold the port across worker restarts.
Unix: the supervisor creates one listening socket and the workers inherit it.
"""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

_TCP_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]*):(\d{1,5})")

BACKLOG = 2048


@dataclass(frozen=True)
class BindAddress:
    """Where to serve websockets: a TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    def __str__(self) -> str:
        if self.is_unix:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_bind(value: str) -> BindAddress:
    """Parse ``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``unix:PATH``."""
    if value.startswith("unix:"):
        path = value[len("unix:") :]
        if not path:
            raise ValueError("unix: needs a path, e.g. unix:/run/websockets.sock")
        return BindAddress(path=path)
    match = _TCP_RE.fullmatch(value)
    if not match or not 0 <= int(match.group(2)) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT or unix:PATH")
    return BindAddress(host=match.group(1).strip("[]") or "0.0.0.0", port=int(match.group(2)))


def tcp_socket(address: BindAddress, *, listen: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address.host, address.port))
        if listen:
            sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def unix_socket(address: BindAddress) -> socket.socket:
    path = Path(address.path)
    if path.exists():
        if not stat.S_ISSOCK(path.stat().st_mode):
            raise OSError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket from a server that died
        else:
            raise OSError(f"another server is already listening on unix:{path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o660)
    sock.listen(BACKLOG)
    return sock
