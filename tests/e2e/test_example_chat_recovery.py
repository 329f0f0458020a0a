"""The example chat in a real browser: it reconnects, catches up, and says when it cannot.

Headless Chromium (Debian's chromium and chromium-driver) drives the page; the pages come
from Django's development server, the websockets from the edge.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from support.example import example_env, prepare
from support.processes import EXAMPLE_PROJECT, Process, Stack, base_env, free_port, wait_until

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

PUBLISH = """
import json
from asgiref.sync import async_to_sync
from django_ws_client.groups import GroupMessage
from django_ws_client.transport import get_channel_layer
for n in range(3):
    async_to_sync(get_channel_layer().group_send)(
        "chat_lobby",
        GroupMessage("chat_message", message=f"missed {n}", params=json.dumps({"sender": "bob"})),
    )
"""


@pytest.fixture
def browser() -> Iterator[object]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def log_lines(driver: object) -> list[str]:
    text: str = driver.find_element(By.ID, "log").text  # type: ignore[attr-defined]
    return text.splitlines()


async def wait_for_line(driver: object, wanted: str, timeout: float = 20) -> list[str]:
    """The page's log once a line contains ``wanted``."""
    await asyncio.to_thread(
        wait_until,
        lambda: any(wanted in line for line in log_lines(driver)),
        timeout,
        f"the page to show {wanted!r}",
    )
    return log_lines(driver)


async def wait_for_online(driver: object, wanted: str, timeout: float = 20) -> None:
    def shown() -> bool:
        return driver.find_element(By.ID, "online").text == wanted  # type: ignore[attr-defined,no-any-return]

    await asyncio.to_thread(wait_until, shown, timeout, f"the page to show {wanted!r}")


async def test_the_example_chat_catches_up_after_a_reconnect_and_reports_a_gap(
    stack: Stack, tmp_path: Path, browser: object
) -> None:
    sessions = prepare(tmp_path)
    broker = stack.broker()
    env = {**example_env(tmp_path), "CHAT_BROKER": broker.listen}
    edge = stack.edge(workers=1, project=EXAMPLE_PROJECT, settings="chat_project.settings", env=env)
    page_port = free_port()
    pages = Process(
        args=[sys.executable, "manage.py", "runserver", f"127.0.0.1:{page_port}", "--noreload"],
        log_path=tmp_path / "pages.log",
        env=base_env(DJANGO_SETTINGS_MODULE="chat_project.settings", **env),
        cwd=EXAMPLE_PROJECT,
    )
    pages.start()
    stack.processes.append(pages)
    origin = f"http://127.0.0.1:{page_port}"

    def pages_up() -> bool:
        try:
            urllib.request.urlopen(f"{origin}/login/", timeout=1)
        except OSError:
            return False
        return True

    await asyncio.to_thread(wait_until, pages_up, 30, "the pages")
    ws_port = edge.bind.rsplit(":", 1)[1]
    browser.get(f"{origin}/login/")  # type: ignore[attr-defined]
    browser.add_cookie({"name": "sessionid", "value": sessions["alice"]})  # type: ignore[attr-defined]
    browser.get(f"{origin}/?room=lobby&ws_port={ws_port}")  # type: ignore[attr-defined]
    await wait_for_line(browser, "connected")

    bob = await connect(
        f"{edge.ws_url}/ws/chat/lobby/",
        additional_headers={"Cookie": f"sessionid={sessions['bob']}"},
        origin=origin,  # type: ignore[arg-type]
    )
    await bob.send("one")
    await wait_for_line(browser, "bob: one")
    # Who is online, kept up to date from presence events.
    await wait_for_online(browser, "Online: alice, bob")

    # The websocket server goes away; messages are published meanwhile.
    edge.signal(signal.SIGKILL)
    edge.wait(10)
    await wait_for_line(browser, "reconnecting")
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", "shell", "-c", PUBLISH],
        cwd=EXAMPLE_PROJECT,
        env=base_env(DJANGO_SETTINGS_MODULE="chat_project.settings", **env),
        check=True,
        timeout=60,
    )
    stack.edge(
        workers=1,
        project=EXAMPLE_PROJECT,
        settings="chat_project.settings",
        env=env,
        bind=edge.bind,
        name="edge-again",
    )
    lines = await wait_for_line(browser, "bob: missed 2", timeout=30)
    chat = [line for line in lines if line.startswith("bob: ")]
    print(f"\nthe page after the server came back: {lines}")
    assert chat == ["bob: one", "bob: missed 0", "bob: missed 1", "bob: missed 2"]
    assert not any("could not be recovered" in line for line in lines)
    # Bob's connection died with the server and he did not come back: he left.
    await wait_for_online(browser, "Online: alice")
    print("online list on the page: 'Online: alice, bob', then 'Online: alice'")

    # The broker is killed and restarted: its history is gone, and the page says so.
    broker.signal(signal.SIGKILL)
    broker.wait(5)
    stack.broker(broker.listen, name="broker-again")
    lines = await wait_for_line(
        browser, "some messages could not be recovered while you were away", timeout=30
    )
    print(f"after the broker was killed: {lines[-1]!r}")
    shot = tmp_path / "chat.png"
    browser.save_screenshot(str(shot))  # type: ignore[attr-defined]
    print(f"screenshot: {shot.name}")
    await bob.close()
