"""A websockets connection that cannot be made to buffer without bound.

websockets answers pings and close frames itself, straight into the transport, without
flow control; consumer sends do wait (``write_limit``). A client that floods pings and
never reads the pongs could therefore grow the worker's memory forever. This subclass,
installed through websockets' ``create_connection`` hook, aborts such a connection once
its unsent data passes ``max_write_buffer`` and counts it.
"""

from __future__ import annotations

import logging

from websockets.asyncio.server import ServerConnection

from django_ws_edge import metrics

logger = logging.getLogger("django_ws.edge")


def guarded_connection_class(max_write_buffer: int) -> type[ServerConnection]:
    class GuardedServerConnection(ServerConnection):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            transport = self.transport
            if transport is not None and transport.get_write_buffer_size() > max_write_buffer:
                metrics.SLOW_CONSUMERS_CLOSED.inc()
                logger.warning(
                    "cut off %s: %d bytes it does not read are waiting to be sent (limit %d)",
                    self.remote_address,
                    transport.get_write_buffer_size(),
                    max_write_buffer,
                )
                transport.abort()

    return GuardedServerConnection
