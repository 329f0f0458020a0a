"""Processes the benchmark and the tests start, and the promise that they stop every one.

The one process harness of the repository: the tests' brokers and websocket servers
(``tests/support/processes.py``) are built on :class:`ManagedProcess` too.

Each child gets its own process group (``start_new_session``), so stopping it reaches
its workers too. Some children make grandchildren in sessions of their own (django-ws'
embedded broker is one), so before stopping a child its whole process tree is noted and
whatever of it survives the group signal is killed by pid. Every process is registered
in a :class:`ProcessRegistry` the moment it starts; the command stops the registry in a
``finally`` that also runs on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

EPHEMERAL_PORTS_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
"""Where Linux keeps the range it takes outgoing connections' source ports from."""

LOWEST_FREE_PORT = 20_000
"""The lowest port :func:`free_port` hands out (below it lie well-known services)."""

_handed_out: set[int] = set()
_choose = random.SystemRandom().choice  # independent of any seed a test sets


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections (Linux's default
    where the file cannot be read)."""
    try:
        low, high = EPHEMERAL_PORTS_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now, and
    that this process has not handed out before.

    A port the kernel picks (``bind(("127.0.0.1", 0))``) comes from the range it also
    takes outgoing connections' source ports from, and is free again once the probe
    closes: a client connecting anywhere, or the next call, could take it before the
    server that was meant to listen there binds it ("address already in use"). So the
    port is picked below that range, where only an explicit bind takes a port, and
    never twice in one process.
    """
    low, _high = _ephemeral_ports()
    if low - LOWEST_FREE_PORT >= 1_000:
        candidates = range(LOWEST_FREE_PORT, low)
        for _ in range(200):
            port = _choose(candidates)
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue  # in use, or lingering from an earlier test
            _handed_out.add(port)
            return port
    while True:  # no room below the range: let the kernel pick, never one given before
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_status(url: str, timeout: float = 1.0) -> int:
    """The status of a GET, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def grpc_serving(address: str) -> bool:
    """Whether the django-ws broker at ``address`` (insecure: the benchmark's and the
    tests' own) answers its gRPC health check with SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=0.5
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    return [pid] + [child.pid for child in psutil.Process(pid).children(recursive=True)]


def none_running(pids: list[int]) -> bool:
    """Whether every one of ``pids`` has exited (zombies awaiting their parent count)."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


@dataclass(kw_only=True)
class ManagedProcess:
    """A child process in its own process group, with its output in a log file.

    ``terminate_group``: whether a stop sends SIGTERM to the whole group (servers whose
    workers should all stop at once) or to the process alone (a supervisor whose own
    shutdown is under test); either way what is left is then killed.
    """

    args: list[str]
    log_path: Path
    cwd: Path
    env: dict[str, str]
    name: str = ""
    popen: subprocess.Popen[bytes] | None = None
    extra_pids: list[int] = field(default_factory=list)
    terminate_group: bool = True

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self, tail: int | None = None) -> str:
        """The process's output so far (its last ``tail`` characters)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text if tail is None else text[-tail:]

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited early; the end of its log:\n{self.log(4000)}")

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def tree(self) -> list[psutil.Process]:
        """This process, its descendants (in any session) and the extra pids given."""
        found: list[psutil.Process] = []
        for pid in [self.pid, *self.extra_pids] if self.popen else self.extra_pids:
            try:
                root = psutil.Process(pid)
                found.append(root)
                found.extend(root.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return found

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (to the group or the process), then SIGKILL to whatever of the tree
        is left."""
        if self.popen is None:
            return
        try:
            tree = self.tree()
        except psutil.Error:
            tree = []
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if self.terminate_group:
                    os.killpg(self.popen.pid, signal.SIGTERM)
                else:
                    self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        _, alive = psutil.wait_procs(tree, timeout=3)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        if self.popen.poll() is None:
            self.popen.wait(5)


class ProcessRegistry:
    """Every process the benchmark started, stopped in reverse order."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []

    def start(self, process: ManagedProcess) -> ManagedProcess:
        self.processes.append(process)  # registered first: stopped even if start fails
        process.start()
        return process

    def stop(self, process: ManagedProcess) -> None:
        process.stop()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        while self.processes:
            process = self.processes.pop()
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                pid = process.popen.pid if process.popen else None
                print(f"could not stop {process.name} (pid {pid}): {exc}")


def tree_cpu_split(processes: list[psutil.Process]) -> tuple[float, float]:
    """User and system CPU seconds summed over ``processes``, apart: a server's own code
    (Python, the event loop, C extensions) against the kernel's work for it (socket
    writes and wake-ups above all), so that a gap between two servers can be placed in
    one or the other."""
    user = system = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        user += times.user
        system += times.system
    return user, system


def tree_usage(processes: list[psutil.Process]) -> tuple[float, int]:
    """CPU seconds (user + system) and RSS bytes summed over ``processes``."""
    cpu = 0.0
    rss = 0
    for process in processes:
        try:
            with process.oneshot():
                times = process.cpu_times()
                cpu += times.user + times.system
                rss += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return cpu, rss
