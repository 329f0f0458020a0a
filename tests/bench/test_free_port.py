"""The ports the tests and the benchmark start servers on (``bench.processes.free_port``).

A port the kernel picks for a probe comes from the range outgoing connections take
their source ports from, so a client elsewhere could hold it by the time a server binds
it; the picker must stay out of that range, skip ports in use, and never hand out one
port twice.
"""

from __future__ import annotations

import socket

from bench import processes


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    low, _high = processes._ephemeral_ports()
    ports = [processes.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    if low - processes.LOWEST_FREE_PORT >= 1_000:
        assert all(processes.LOWEST_FREE_PORT <= port < low for port in ports), ports
    for port in ports[:20]:  # each can be listened on
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
            sock.listen()


def test_a_port_in_use_is_not_handed_out() -> None:
    held = []
    try:
        # Hold a block of ports below the range; none of them may come back.
        for port in range(processes.LOWEST_FREE_PORT, processes.LOWEST_FREE_PORT + 200):
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sock.listen()
            held.append(sock)
        taken = {sock.getsockname()[1] for sock in held}
        picked = {processes.free_port() for _ in range(2_000)}
        assert not taken & picked
    finally:
        for sock in held:
            sock.close()
