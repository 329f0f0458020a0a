"""Users of the test project, logged in as a browser would be: their session keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.processes import TEST_PROJECT, base_env

USERS_SETUP = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
keys = {}
for name in NAMES:
    user = get_user_model().objects.create_user(name, password="pw", first_name=name.title())
    client = Client()
    assert client.login(username=name, password="pw")
    keys[name] = [user.pk, client.cookies["sessionid"].value]
print(json.dumps(keys))
"""


def make_users(tmp: Path, names: list[str]) -> dict[str, tuple[int, str]]:
    """Users in the database the edges read (migrated here): name -> (pk, session key)."""
    env = base_env(
        DJANGO_SETTINGS_MODULE="testproject.settings",
        TEST_DATABASE=str(tmp / "db.sqlite3"),
        PYTHONPATH=str(TEST_PROJECT),
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=TEST_PROJECT, env=env, check=True)
    script = f"NAMES = {names!r}\n" + USERS_SETUP
    out = subprocess.run(
        [*manage, "shell", "-c", script],
        cwd=TEST_PROJECT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    keys = json.loads(out.stdout.strip().splitlines()[-1])
    return {name: (pk, session) for name, (pk, session) in keys.items()}
