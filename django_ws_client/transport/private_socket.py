"""Where the embedded broker's unix socket lives, and the checks before it is used.

Whoever answers on the socket receives every group message of the project, so the
socket must be this user's own. It lives in a directory only this user can enter:
``$XDG_RUNTIME_DIR/django-ws`` when that is set and usable (it is private by the XDG
rules), else ``<temp dir>/django-ws-<uid>``, created with mode 0700. Before the socket
is used (connected to, or served on) the directory must be owned by this user with no
access for others, and an existing socket must be owned by this user: another user
who created the directory or bound the socket first is refused, never talked to.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from django_ws_client.exceptions import UnsafeBrokerSocket

DIRECTORY_NAME = "django-ws"
"""The embedded broker's directory under ``XDG_RUNTIME_DIR`` (``django-ws-<uid>`` in the
temp dir, where the uid keeps users apart)."""

_HINT = (
    "Remove it if it is stale, or set WEBSOCKET_TRANSPORT_BACKENDS['default']['CONFIG']"
    "['address'] to a unix socket in a directory only this user can write."
)


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _usable_runtime_dir() -> Path | None:
    """``XDG_RUNTIME_DIR`` when it is an absolute directory of ours that others cannot
    enter (as the XDG rules require); None otherwise."""
    value = os.environ.get("XDG_RUNTIME_DIR", "")
    if not value or not os.path.isabs(value):
        return None
    try:
        info = os.lstat(value)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return Path(value)


def socket_directory() -> Path:
    """The private directory for this user's embedded broker sockets."""
    runtime = _usable_runtime_dir()
    if runtime is not None:
        return runtime / DIRECTORY_NAME
    return Path(tempfile.gettempdir()) / f"{DIRECTORY_NAME}-{os.getuid()}"


def check_private_directory(directory: Path) -> None:
    """Raise :class:`UnsafeBrokerSocket` unless ``directory`` is a real directory (not a
    symlink) owned by this user, with no permissions for group or others. A missing
    directory passes: there is no socket in it to reach."""
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeBrokerSocket(
            f"the embedded broker's directory {directory} is not a directory (a symlink or "
            f"a file owned by {_owner(info.st_uid)}); refusing to use it. {_HINT}"
        )
    if info.st_uid != os.getuid():
        raise UnsafeBrokerSocket(
            f"the embedded broker's directory {directory} is owned by {_owner(info.st_uid)}, "
            f"not by this process's user, {_owner(os.getuid())}: another user may be "
            f"squatting it to receive this project's messages; refusing to use it. {_HINT}"
        )
    if info.st_mode & 0o077:
        raise UnsafeBrokerSocket(
            f"the embedded broker's directory {directory} has mode "
            f"{stat.S_IMODE(info.st_mode):o}: other users could replace its socket; it must be "
            f"700. Run 'chmod 700 {directory}' or remove it."
        )


def ensure_private_directory(directory: Path) -> None:
    """Create ``directory`` with mode 0700 if it is missing, then check it."""
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
    check_private_directory(directory)


def check_socket_owner(path: Path) -> None:
    """Raise :class:`UnsafeBrokerSocket` if something other than a unix socket of this
    user is at ``path``; nothing there is fine (a broker is about to bind it)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise UnsafeBrokerSocket(
            f"{path} is not a unix socket (owned by {_owner(info.st_uid)}); refusing to use "
            f"it as the broker's socket. {_HINT}"
        )
    if info.st_uid != os.getuid():
        raise UnsafeBrokerSocket(
            f"the broker socket {path} is owned by {_owner(info.st_uid)}, not by this "
            f"process's user, {_owner(os.getuid())}: whoever answers there would receive "
            f"every group message; refusing to connect to it. {_HINT}"
        )


def check_broker_socket(path: Path, *, create: bool = False) -> None:
    """The checks before the embedded broker's socket at ``path`` is used: its
    directory when it is the private default one (created when ``create``), and the
    socket's owner wherever it is."""
    if path.parent == socket_directory():
        if create:
            ensure_private_directory(path.parent)
        else:
            check_private_directory(path.parent)
    check_socket_owner(path)
