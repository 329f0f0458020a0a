"""The Channels tutorial's chat, moved by changing imports and routing lines: its own
Selenium tests (part 4) pass with ChannelsLiveServerTestCase, and two headless Chromium
browsers chat through it under `manage.py runserver` on one port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import ROOT, TEST_PROJECT, Stack, base_env, wait_until

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not (shutil.which("chromium") and shutil.which("chromedriver")),
        reason="needs Debian's chromium and chromium-driver (tests/run.sh installs them as root)",
    ),
]

TUTORIAL = ROOT / "examples" / "tutorial"


def manage(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=150,
    )


def test_the_tutorials_selenium_tests_pass_with_the_live_server_case(tmp_path: Path) -> None:
    started = time.monotonic()
    result = manage(TUTORIAL, "test", "chat", "-v", "2", env={"TUTORIAL_DATA_DIR": str(tmp_path)})
    report = result.stderr
    print(f"manage.py test chat: exit {result.returncode} in {time.monotonic() - started:.1f}s")
    for line in report.splitlines():
        if line.startswith(("test_", "Ran ", "OK", "FAILED")):
            print(line)
    assert result.returncode == 0, report[-4000:]
    assert "Ran 2 tests" in report and "\nOK" in report


def test_the_live_server_case_serves_the_test_database_views_and_static_files(
    tmp_path: Path,
) -> None:
    env = {
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "TEST_DATABASE": str(tmp_path / "db.sqlite3"),
        "TEST_TEST_DATABASE": str(tmp_path / "test_db.sqlite3"),
        "TMPDIR": str(tmp_path),
    }
    result = manage(TEST_PROJECT, "test", "testproject.live_tests", "-v", "2", env=env)
    for line in result.stderr.splitlines():
        if line.startswith(("test_", "Ran ", "OK", "FAILED")):
            print(line)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Ran 3 tests" in result.stderr


@pytest.fixture
def browsers() -> Iterator[list[object]]:
    sys.path.insert(0, str(TUTORIAL))
    try:
        from chat.browser import headless_chromium
    finally:
        sys.path.remove(str(TUTORIAL))
    started: list[object] = []
    try:
        started.append(headless_chromium())
        started.append(headless_chromium())
        yield started
    finally:
        for driver in started:
            driver.quit()  # type: ignore[attr-defined]


def test_two_browsers_chat_under_runserver_on_one_port(
    stack: Stack, tmp_path: Path, browsers: list[object]
) -> None:
    env = {"TUTORIAL_DATA_DIR": str(tmp_path), "TMPDIR": str(tmp_path)}
    assert manage(TUTORIAL, "migrate", "-v0", env=env).returncode == 0
    server = stack.runserver(project=TUTORIAL, env={**env, "DJANGO_SETTINGS_MODULE": "mysite.settings"})
    alice, bob = browsers
    room = f"{server.url}/chat/lobby/"
    for browser in (alice, bob):
        browser.get(room)  # type: ignore[attr-defined]
    for browser in (alice, bob):
        # The tutorial's page opens `ws://${window.location.host}/ws/chat/lobby/`.
        wait_until(
            lambda b=browser: b.execute_script("return chatSocket.readyState") == 1,  # type: ignore[attr-defined]
            10,
            "the tutorial page's websocket to open",
        )
    url = alice.execute_script("return chatSocket.url")  # type: ignore[attr-defined]
    assert url == f"{server.ws_url}/ws/chat/lobby/"
    print(f"both pages opened {url} on the pages' own port {server.port}")

    def say(browser: object, text: str) -> None:
        field = browser.find_element("css selector", "#chat-message-input")  # type: ignore[attr-defined]
        field.send_keys(text)
        browser.find_element("css selector", "#chat-message-submit").click()  # type: ignore[attr-defined]

    def log_of(browser: object) -> str:
        return str(browser.find_element("css selector", "#chat-log").get_property("value"))  # type: ignore[attr-defined]

    started = time.monotonic()
    say(alice, "hello from alice")
    wait_until(lambda: "hello from alice" in log_of(bob), 10, "bob to see alice's message")
    say(bob, "hi alice")
    wait_until(lambda: "hi alice" in log_of(alice), 10, "alice to see bob's reply")
    print(f"two browsers exchanged 2 messages in {time.monotonic() - started:.2f}s")
    assert log_of(alice) == log_of(bob) == "hello from alice\nhi alice\n"
    assert '"GET /chat/lobby/ HTTP/1.1" 200' in server.log()
    assert '"GET /ws/chat/lobby/ HTTP/1.1" 101' in server.log()
    assert os.path.exists(tmp_path / "db.sqlite3")
