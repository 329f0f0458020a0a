"""The django-ws wire contract and what both sides of it must agree on.

Edges, brokers and plain Django processes all import this package, so it stays small
and free of Django: the generated gRPC stubs (``django_ws_proto.v1``), the rules for
group, channel and event names (:mod:`.names`), the event codec (:mod:`.codec`) and the
shard ring that says which broker owns a group (:mod:`.ring`).
"""

PROTOCOL_VERSION = "django_ws.v1"

__all__ = ["PROTOCOL_VERSION"]
