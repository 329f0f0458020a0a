"""A unix socket squatted by a second local user: a plain listener that counts the
connections it accepts, so a test can show that nothing of ours connects to it.

The listener needs nothing but the standard library and runs on an interpreter the other
user can read. The tests' own interpreter may not be one: a pyenv Python under a home
directory of mode 0700 either cannot be executed by another user or starts without its
own prefix, so neither our packages nor, on some machines, its standard library is there.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.processes import Process, Stack, base_env, wait_until
from support.users import as_user

# The system's own interpreters first: readable by every user wherever they exist.
CANDIDATE_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3", sys.executable)

# Binds argv[1], writes the number of connections it accepted to argv[2] after each one,
# and on SIGTERM also accepts what is still in the backlog (a connect() that completed
# but was not accepted yet) before writing the final count and exiting.
LISTENER = """
import signal, socket, sys

stopping = False

def stop(signum, frame):
    global stopping
    stopping = True

def record(count):
    with open(sys.argv[2], "w") as out:
        out.write(f"{count}\\n")

server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(16)
accepted = 0
record(accepted)
# The handler only sets a flag, so a count is never cut short between accept and record;
# the timeout lets the loop see the flag (accept is retried after a signal, PEP 475).
signal.signal(signal.SIGTERM, stop)
server.settimeout(0.1)
print("listening", flush=True)
while not stopping:
    try:
        conn, _ = server.accept()
    except socket.timeout:
        continue
    conn.close()
    accepted += 1
    record(accepted)
    print("connection accepted", flush=True)
server.setblocking(False)
while True:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        break
    conn.close()
    accepted += 1
record(accepted)
print(f"stopped after {accepted} connection(s)", flush=True)
"""


def python_for(uid: int, gid: int) -> str:
    """An interpreter ``uid``/``gid`` can run with the standard library it needs."""
    for candidate in CANDIDATE_PYTHONS:
        if not Path(candidate).is_file():
            continue
        probe = subprocess.run(
            as_user(uid, gid, [candidate, "-I", "-c", "import signal, socket"]),
            capture_output=True,
            cwd="/",
            timeout=30,
        )
        if probe.returncode == 0:
            return candidate
    pytest.skip(
        "no Python the second local user can run: none of "
        f"{', '.join(CANDIDATE_PYTHONS)} works for them (install the system's python3)"
    )


@dataclass
class Squatter:
    """The listener process and the file it writes its count of connections to."""

    process: Process
    count_path: Path
    python: str

    def stop_and_count(self) -> int:
        """Stop the listener and return how many connections it accepted in all."""
        self.process.stop()
        log = self.process.log()
        assert "stopped after" in log, f"the squatter did not stop cleanly:\n{log}"
        return int(self.count_path.read_text().strip())


def squat(
    stack: Stack, uid: int, gid: int, socket_path: Path, count_path: Path, name: str
) -> Squatter:
    """Bind ``socket_path`` as ``uid``/``gid`` and wait until it listens.

    ``count_path`` must be in a directory the other user can write to."""
    python = python_for(uid, gid)
    process = Process(
        # -I: the environment's PYTHONPATH (pointing at our packages) is not for them.
        args=as_user(uid, gid, [python, "-I", "-c", LISTENER, str(socket_path), str(count_path)]),
        log_path=stack.tmp / f"{name}.log",
        env=base_env(),
        cwd=Path("/"),
    )
    process.start()
    stack.processes.append(process)

    def listening() -> bool:
        if not process.alive():
            raise AssertionError(f"the squatter exited:\n{process.log()}")
        return "listening" in process.log()

    wait_until(listening, 10, "the squatter's listener")
    return Squatter(process, count_path, python)
