"""The websocket middleware stack (``WEBSOCKET_MIDDLEWARE``).

A middleware is a class built once per worker with the next callable in the stack, and
called once per connection with ``(scope, port)``; it may read or fill the scope, raise
:class:`~django_ws_client.exceptions.DenyConnection` (403) or
:class:`~django_ws_client.exceptions.HandshakeRejected` (any status), and must
``return await self.inner(scope, port)`` to go on. The call lasts for the whole
connection, so code after the ``await`` runs when the connection ends::

    class TimingMiddleware(BaseMiddleware):
        async def __call__(self, scope, port):
            started = time.monotonic()
            try:
                return await self.inner(scope, port)
            finally:
                log.info("connection lasted %.1fs", time.monotonic() - started)
"""

from django_ws_client.middlewares.base import BaseMiddleware, build_stack

__all__ = ["BaseMiddleware", "build_stack"]
