"""A second local user, for tests of what another user of the same machine can do.

Only root can act as another user: elsewhere the tests that need one are skipped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest

OTHER_USER = "django-ws-other"


def other_user() -> tuple[int, int]:
    """The uid and gid of a second local user, created with ``useradd`` if missing."""
    if os.geteuid() != 0:
        pytest.skip("acting as a second local user needs root (setpriv)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    try:
        entry = pwd.getpwnam(OTHER_USER)
    except KeyError:
        if shutil.which("useradd") is None:
            pytest.skip("useradd is not installed to create a second local user")
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
            check=True,
        )
        entry = pwd.getpwnam(OTHER_USER)
    return entry.pw_uid, entry.pw_gid


def as_user(uid: int, gid: int, args: list[str]) -> list[str]:
    """``args`` run as ``uid``/``gid`` with no supplementary groups."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *args]
