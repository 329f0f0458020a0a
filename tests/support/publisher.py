"""A plain Django process that publishes when asked, as a view or a task would.

Run as a script, it reads one JSON command a line on stdin (``{"group": ..., "text":
...}`` or ``{"channel": ..., "text": ...}``), publishes it through
``get_channel_layer()`` built from the test project's settings and the environment
(``TEST_BROKER``, ``DJANGO_WS_SECRET_FILE``), and answers one line: ``ok`` or
``error <exception class>: <message>``. :class:`Publisher` drives it from a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


class Publisher:
    """The script above as a child process, one command at a time."""

    def __init__(self, tmp: Path, env: dict[str, str], name: str = "publisher") -> None:
        from support.processes import TEST_PROJECT, base_env

        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=TEST_PROJECT,
            env=base_env(
                DJANGO_SETTINGS_MODULE="testproject.settings",
                PYTHONPATH=str(TEST_PROJECT),
                **env,
            ),
        )

    def publish(self, *, text: str, group: str = "", channel: str = "") -> str:
        """Publish one event; returns the process's answer."""
        assert self.popen.stdin is not None and self.popen.stdout is not None
        command = {"text": text, **({"channel": channel} if channel else {"group": group})}
        self.popen.stdin.write((json.dumps(command) + "\n").encode())
        self.popen.stdin.flush()
        answer = self.popen.stdout.readline().decode().strip()
        if not answer:
            raise RuntimeError(f"the publisher exited:\n{self.log_path.read_text()}")
        return answer

    def stop(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        self._log.close()


def main() -> None:
    import django
    from asgiref.sync import async_to_sync

    django.setup()
    from django_ws_client.transport import get_channel_layer

    layer = get_channel_layer()
    for line in sys.stdin:
        command = json.loads(line)
        event = {"type": "relay", "text": command["text"], "from": "publisher"}
        try:
            if "channel" in command:
                async_to_sync(layer.send)(command["channel"], event)
            else:
                async_to_sync(layer.group_send)(command["group"], event)
        except Exception as exc:
            print(f"error {type(exc).__name__}: {exc}", flush=True)
        else:
            print("ok", flush=True)


if __name__ == "__main__":
    main()
