"""How many connections one machine can hold: open file limits and source ports.

S6 opens as many idle connections as the servers' file limits allow, and S7 opens
thousands at once. Two limits decide how many fit:

* each connection is a file descriptor in a server process and another in a generator
  process, so the soft ``RLIMIT_NOFILE`` caps both (the harness raises its own to the
  hard limit first; the generators and the Channels servers inherit it, django-ws'
  workers and the bare server raise their own);
* each connection from one local address to the server's one address and port takes an
  ephemeral port, so one address holds at most the ephemeral port range
  (``net.ipv4.ip_local_port_range``, about 28,000 by default). Past that, connections
  come from further loopback addresses (127.0.0.2, 127.0.0.3, ...): all of 127.0.0.0/8
  is the loopback interface on Linux.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

from bench.loadgen import ConnSpec
from django_ws_edge.runtime import FILE_DESCRIPTORS_RESERVED
from django_ws_edge.runtime import raise_open_file_limit as raise_soft_limit

RESERVED_DESCRIPTORS = FILE_DESCRIPTORS_RESERVED
"""Descriptors a server process keeps for other things (listening socket, broker links,
pipes, logs): the margin django-ws' workers keep."""

SHARED_ACCEPT_FILL = 0.9
"""Server processes sharing one listening socket do not fill evenly (whichever accepts
first gets the connection): several processes are filled to this share of their sum."""

PORTS_USED_PER_SOURCE = 0.8
"""Share of the ephemeral port range one source address is given (the rest is left to
whatever else on the machine connects to the same address)."""


def raise_open_file_limit() -> tuple[int, int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to the hard limit, as django-ws'
    workers do (children inherit it). Returns (soft before, soft now, hard)."""
    before = open_file_limit()
    soft, hard = raise_soft_limit()
    return before, soft, hard


def open_file_limit() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux), or the IANA one elsewhere."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def server_capacity(processes: int, soft_limit: int) -> int:
    """Connections ``processes`` server processes hold under ``soft_limit`` each."""
    per_process = max(0, soft_limit - RESERVED_DESCRIPTORS)
    if processes <= 1:
        return per_process
    return int(per_process * processes * SHARED_ACCEPT_FILL)


def per_source() -> int:
    """Connections one source address is given: ``--ports-per-source`` (the smoke test
    makes it small, to use several addresses at a tiny size), else 80% of the range."""
    given = os.environ.get("BENCH_PORTS_PER_SOURCE")
    if given:
        return max(1, int(given))
    low, high = ephemeral_port_range()
    return max(1, int((high - low + 1) * PORTS_USED_PER_SOURCE))


def with_sources(conns: list[ConnSpec]) -> tuple[list[ConnSpec], list[str]]:
    """``conns`` with source addresses where one address's ports would run out: the
    first ``per_source()`` from the default address, the next from 127.0.0.2, and so
    on. Returns them and the addresses used."""
    budget = per_source()
    needed = max(1, math.ceil(len(conns) / budget))
    if needed == 1:
        return conns, ["127.0.0.1"]
    if needed > 250:
        raise RuntimeError(f"{len(conns)} connections need more than 250 loopback addresses")
    placed = []
    for index, conn in enumerate(conns):
        k = index // budget
        placed.append(conn if k == 0 else replace(conn, source=f"127.0.0.{k + 1}"))
    return placed, [f"127.0.0.{k + 1}" for k in range(needed)]
