"""A middleware an application writes wraps the connection's whole life, whether the
middlewares around it are coroutines or (as the built-in scope, origin and route
middlewares are) plain methods that hand on the inner app's awaitable."""

from __future__ import annotations

from typing import Any

from django_ws_client.exceptions import DenyConnection
from django_ws_client.middlewares import BaseMiddleware, build_stack
from django_ws_client.testing import WebsocketCommunicator

BUILT_IN = [
    "django_ws_client.middlewares.scope.ScopeMiddleware",
    "django_ws_client.middlewares.origin.OriginMiddleware",
    "django_ws_client.middlewares.route.RouteMiddleware",
]


class Lifetime(BaseMiddleware):
    """Records when the connection starts and when the inner stack returns."""

    log: list[str] = []

    async def __call__(self, scope: Any, port: Any) -> None:
        self.log.append(f"start {scope['path']}")
        try:
            return await self.inner(scope, port)
        finally:
            self.log.append(f"end {scope['path']} cookies={sorted(scope.get('cookies', {}))}")


def stack_with_lifetime_outside() -> Any:
    return Lifetime(build_stack(BUILT_IN))


async def test_outer_async_middleware_ends_only_when_the_connection_ends() -> None:
    Lifetime.log = []
    comm = WebsocketCommunicator(
        stack_with_lifetime_outside(),
        "/ws/chat/async/room1/",
        headers=[(b"cookie", b"flavour=plain")],
    )
    assert (await comm.connect())[0]
    await comm.send_to(text_data='{"message": "hi"}')
    assert await comm.receive_from() == '{"message": "hi"}'
    # Connected and served, and the middleware's call has not returned.
    assert Lifetime.log == ["start /ws/chat/async/room1/"]
    await comm.disconnect()
    assert Lifetime.log == [
        "start /ws/chat/async/room1/",
        "end /ws/chat/async/room1/ cookies=['flavour']",
    ]


async def test_async_middleware_inside_the_built_in_ones_sees_their_scope() -> None:
    Lifetime.log = []
    app = build_stack(BUILT_IN[:2], inner=Lifetime(build_stack(BUILT_IN[2:])))
    comm = WebsocketCommunicator(app, "/ws/chat/async/room2/", headers=[(b"cookie", b"a=1")])
    assert (await comm.connect())[0]
    assert Lifetime.log == ["start /ws/chat/async/room2/"]
    await comm.disconnect()
    assert Lifetime.log[-1] == "end /ws/chat/async/room2/ cookies=['a']"


async def test_a_plain_middleware_refusing_still_rejects_the_handshake() -> None:
    class RefuseEverything(BaseMiddleware):
        def __call__(self, scope: Any, port: Any) -> Any:
            raise DenyConnection("closed for maintenance")

    comm = WebsocketCommunicator(RefuseEverything(build_stack(BUILT_IN)), "/ws/chat/async/x/")
    connected, code = await comm.connect()
    assert (connected, code) == (False, 403)
