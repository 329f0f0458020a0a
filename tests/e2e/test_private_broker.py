"""The embedded broker is private to the server's user: its socket lives in a directory
only that user can enter, and a socket or directory another local user got to first
is refused with a clear error, never connected to."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import TEST_PROJECT, Stack, base_env
from support.squatter import squat
from support.users import as_user, other_user

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir like /tmp (sticky, writable by all), used as the server's TMPDIR."""
    path = Path(tempfile.mkdtemp(prefix="django-ws-shared-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def environment(shared: Path, **extra: str) -> dict[str, str]:
    """The default embedded broker, with ``shared`` as the temp dir (and no broker
    address another test may have left in this process's environment)."""
    unset = {"TEST_BROKER": "", "TEST_BROKERS": "", "DJANGO_WS_BROKERS": ""}
    return {**unset, "TMPDIR": str(shared), "XDG_RUNTIME_DIR": "", **extra}


def run_django(shared: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a process of the test project, as its views would run."""
    env = base_env(DJANGO_SETTINGS_MODULE="testproject.settings", **environment(shared))
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=TEST_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def embedded_socket(shared: Path) -> Path:
    """The socket path the project's own code chooses for its embedded broker."""
    out = run_django(
        shared,
        "from django_ws_client.transport import layer_config; print(layer_config().unix_path)",
    )
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


def refused(stack: Stack, env: dict[str, str]) -> tuple[int, str]:
    """Start the server and wait for it to give up; its exit code and log."""
    server = stack.edge(workers=1, env=env, wait=False)
    try:
        code = server.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the server did not refuse the socket:\n{server.log()}") from None
    return code, server.log()


def test_the_embedded_broker_socket_is_in_a_private_directory(
    stack: Stack, shared_tmp: Path
) -> None:
    server = stack.edge(workers=1, env=environment(shared_tmp))
    path = embedded_socket(shared_tmp)
    directory = os.lstat(path.parent)
    print(
        f"\nsocket {path}; directory mode {stat.S_IMODE(directory.st_mode):o}, uid {directory.st_uid}"
    )
    assert path.is_socket()
    assert path.parent != shared_tmp
    assert stat.S_IMODE(directory.st_mode) == 0o700
    assert directory.st_uid == os.getuid()
    assert server.alive()


def test_a_squatted_embedded_broker_directory_is_refused(stack: Stack, shared_tmp: Path) -> None:
    uid, gid = other_user()
    path = embedded_socket(shared_tmp)
    # The other user gets there first: creates the directory and listens on the socket.
    subprocess.run(as_user(uid, gid, ["mkdir", "-p", str(path.parent)]), check=True)
    squatter = squat(stack, uid, gid, path, path.parent / "connections", "squatter")
    assert os.lstat(path).st_uid == uid

    code, log = refused(stack, environment(shared_tmp))
    message = next(line for line in log.splitlines() if "owned by" in line)
    print(f"\nexit code {code}: {message}")
    # A view's group_send (the project's other processes) is refused the same way.
    view = run_django(
        shared_tmp,
        "from asgiref.sync import async_to_sync; "
        "from django_ws_client.transport import get_channel_layer; "
        "async_to_sync(get_channel_layer().group_send)('room', {'type': 'chat.message'})",
    )
    print(f"a view's group_send: {view.stderr.strip().splitlines()[-1]}")
    connections = squatter.stop_and_count()
    print(f"connections made to the squatter's socket: {connections}")
    assert code != 0
    assert f"uid {uid}" in message and "refusing" in message
    assert "using the broker already serving" not in log
    assert view.returncode != 0 and "UnsafeBrokerSocket" in view.stderr
    assert connections == 0


def test_a_squatted_broker_socket_is_refused_before_connecting(
    stack: Stack, shared_tmp: Path
) -> None:
    uid, gid = other_user()
    path = shared_tmp / "broker.sock"
    squatter = squat(stack, uid, gid, path, shared_tmp / "connections", "squatter")

    code, log = refused(stack, environment(shared_tmp, TEST_BROKER=f"unix:{path}"))
    message = next(line for line in log.splitlines() if "owned by" in line)
    connections = squatter.stop_and_count()
    print(f"\nexit code {code}: {message}")
    print(f"connections made to the squatter's socket: {connections}")
    assert code != 0
    assert f"uid {uid}" in message and "refusing to connect" in message
    assert connections == 0


def test_the_squatter_counts_every_connection_made_to_it(stack: Stack, shared_tmp: Path) -> None:
    """The zero above is measured: connections made, even those never accepted before
    the squatter is stopped, are counted."""
    uid, gid = other_user()
    path = shared_tmp / "broker.sock"
    squatter = squat(stack, uid, gid, path, shared_tmp / "connections", "squatter")
    made = 3
    clients = [socket.socket(socket.AF_UNIX) for _ in range(made)]
    try:
        for client in clients:
            client.connect(str(path))
        connections = squatter.stop_and_count()
    finally:
        for client in clients:
            client.close()
    print(f"\nsquatter run by {squatter.python}")
    print(f"connections made {made}, counted by the squatter {connections}")
    assert connections == made
