"""The django-ws edge: websocket worker processes that run Django consumers.

A supervisor starts N worker processes on one address. Each worker serves websockets
with the ``websockets`` library on its own asyncio loop, keeps the group membership of
its own connections (:mod:`.group_index`), and holds one gRPC stream to every broker
(:mod:`.links`), subscribing to a group when its first local member joins.
"""
