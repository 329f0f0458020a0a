"""The django-ws broker: a gRPC service that owns a shard of the groups.

Edges attach one stream each and tell the broker which groups have local members; the
broker fans a group message out once per subscribed edge worker. It knows nothing of
Django or of connections: its state is derived from the edges and is rebuilt by them
after a restart.
"""
