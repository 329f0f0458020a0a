"""Where the embedded broker's socket goes, and what is refused before it is used.
(The attack by a real second user is in tests/e2e/test_private_broker.py.)"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest

from django_ws_client.exceptions import UnsafeBrokerSocket
from django_ws_client.transport.private_socket import (
    check_broker_socket,
    check_private_directory,
    ensure_private_directory,
    socket_directory,
)


def test_xdg_runtime_dir_is_used_only_when_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert socket_directory() == runtime / "django-ws"
    runtime.chmod(0o755)  # not private: not used
    fallback = socket_directory()
    print(f"\nprivate XDG_RUNTIME_DIR: {runtime / 'django-ws'}; otherwise: {fallback}")
    assert fallback.parent == Path(tempfile.gettempdir())
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/path")
    assert socket_directory() == fallback


def test_the_directory_is_created_0700_and_an_open_one_refused(tmp_path: Path) -> None:
    directory = tmp_path / "django-ws-test"
    ensure_private_directory(directory)
    assert directory.stat().st_mode & 0o777 == 0o700
    directory.chmod(0o777)
    with pytest.raises(UnsafeBrokerSocket, match="mode 777"):
        check_private_directory(directory)
    directory.rmdir()
    directory.symlink_to(tmp_path)
    with pytest.raises(UnsafeBrokerSocket, match="not a directory"):
        check_private_directory(directory)


def test_something_other_than_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broker.sock"
    check_broker_socket(path)  # nothing there: a broker may bind it
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        check_broker_socket(path)  # ours
    path.unlink()
    path.write_text("")
    with pytest.raises(UnsafeBrokerSocket, match="not a unix socket"):
        check_broker_socket(path)
