"""pytest fixtures for projects using django-ws (loaded automatically by pytest).

``live_websockets_server``: a real ``websockets_server`` with its embedded broker on free
ports for the test session's module, stopped afterwards::

    async def test_chat(live_websockets_server):
        async with websockets.connect(f"{live_websockets_server.url}/ws/chat/lobby/") as ws:
            ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from django_ws_client.testing import LiveServer


@pytest.fixture(scope="module")
def live_websockets_server() -> Iterator[LiveServer]:
    # Imported here: this plugin loads in every pytest run, before Django is set up.
    from django_ws_client.testing import LiveServer

    with LiveServer(workers=1) as server:
        yield server
