"""Exceptions a consumer or a caller of the channel layer may raise or catch.

The first four carry Channels' names and meanings so that ported code catches the same
things.
"""


class StopConsumer(Exception):
    """Raised by a handler to end the consumer: the connection is closed."""


class DenyConnection(Exception):
    """Raised in ``connect`` to reject the handshake with HTTP 403."""


class AcceptConnection(Exception):
    """Raised in ``connect`` to accept the handshake."""


class ChannelFull(Exception):
    """A channel's queue is at its ``capacity``: the event was not delivered."""


class InvalidChannelLayerError(ValueError):
    """The transport settings name a backend or an option that does not work."""


class BrokerUnavailable(ConnectionError):
    """The broker that owns a group could not be reached; the operation was not done.

    Raised only past the transport's bounds: after ``publish_timeout`` seconds of
    waiting for the broker to come back (a restart in a rolling upgrade fits well
    inside the default), or while too many publishes wait for its acknowledgement.
    """


class LifecycleEventRefused(ValueError):
    """A ``websocket.*`` event was sent through the channel layer.

    Those types (``websocket.connect``, ``websocket.receive``, ``websocket.disconnect``)
    are the server's own account of a connection's life; accepted from the layer, one
    would end a consumer while its socket stays open, or fake a client's message.
    """


class UnsafeBrokerSocket(PermissionError):
    """The embedded broker's unix socket, or its directory, belongs to another user or
    is open to others: using it could hand every group message to someone else."""


class BrokerRefused(ValueError):
    """The broker refused an operation and said why (wrong owner, bad name, limit)."""


class HandshakeRejected(Exception):
    """Raised by a middleware to answer the handshake with an HTTP status.

    ``RouteMiddleware`` raises it with 404 for a path no route matches; a user's own
    middleware may raise it with any 4xx or 5xx status.
    """

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"{status} {reason}".strip())
        self.status = status
        self.reason = reason


class GroupRefused(BrokerRefused):
    """The broker refused to subscribe this worker to a group (a subscription limit,
    a bad name): its members would never receive, so ``group_add`` raises this."""


class PresenceNotEnabled(ValueError):
    """Presence asked of a group that did not opt in (``CONFIG['presence_groups']``)."""


class PresenceInfoTooLarge(ValueError):
    """A presence info dict larger than ``CONFIG['presence_info_bytes']``."""
