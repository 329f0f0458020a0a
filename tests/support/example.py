"""The example chat project prepared as a new user would: migrated, with users."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.processes import EXAMPLE_PROJECT, base_env

SETUP = """
from django.contrib.auth import get_user_model
from django.test import Client
import json
keys = {}
for name in ("alice", "bob", "mallory"):
    user = get_user_model().objects.create_user(name, password="pw")
    if name != "mallory":
        from django.contrib.auth.models import Permission
        user.user_permissions.add(Permission.objects.get(codename="connect_to_chat"))
    client = Client()
    assert client.login(username=name, password="pw")
    keys[name] = client.cookies["sessionid"].value
print(json.dumps(keys))
"""


def example_env(tmp_path: Path) -> dict[str, str]:
    return {
        "CHAT_DATABASE": str(tmp_path / "chat.sqlite3"),
        "CHAT_BROKER": f"unix:{tmp_path / 'chat.sock'}",
    }


def prepare(tmp_path: Path) -> dict[str, str]:
    env = base_env(DJANGO_SETTINGS_MODULE="chat_project.settings", **example_env(tmp_path))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=EXAMPLE_PROJECT, env=env, check=True
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SETUP],
        cwd=EXAMPLE_PROJECT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
