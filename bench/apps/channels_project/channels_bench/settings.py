"""Settings of the benchmark's Channels project.

``BENCH_CHANNEL_LAYER`` picks the layer:

* ``core`` (channels_redis' ``RedisChannelLayer``, the default one) or ``pubsub``
  (``RedisPubSubChannelLayer``), on ``BENCH_REDIS_URL``;
* ``djws``: django-ws' ``GRPCChannelLayer`` on the broker at ``BENCH_BROKER``, with
  its defaults (CONFIG as in ``WEBSOCKET_TRANSPORT_BACKENDS``);
* ``nats``: channels-nats' ``NatsChannelLayer`` on the nats-server at ``BENCH_NATS_URL``,
  with its defaults (per-channel capacity 100, as django-ws' per-consumer inbox).

The channels_redis layers keep their defaults except two:

* redis-py waits on its socket without a timeout (``socket_timeout: None``, also for
  connecting), so a busy moment is never turned into a reconnect;
* ``RedisChannelLayer``'s ``capacity`` is ``BENCH_CHANNELS_CAPACITY`` (default 100,000).
  That layer stores every consumer channel of one worker process under one Redis key,
  so its capacity (default 100) bounds a whole worker's backlog: one ``group_send`` to a
  room with more than 100 members on a worker would drop the rest. Raised, each consumer
  gets at least the 100 messages of room the default means (and django-ws gives each
  consumer's inbox). ``RedisPubSubChannelLayer`` has no capacity (unbounded queues).
"""

import os

SECRET_KEY = "benchmark-only-secret-key"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "channels_bench.asgi.application"

_LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "djws": "django_ws_client.layers.GRPCChannelLayer",
    "nats": "channels_nats.NatsChannelLayer",
}
_host = {
    "address": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "socket_timeout": None,
    "socket_connect_timeout": None,
    "socket_keepalive": True,
}
_layer = os.environ.get("BENCH_CHANNEL_LAYER", "core")
_config: dict[str, object] = {"hosts": [_host]}
if _layer == "core":
    _config["capacity"] = int(os.environ.get("BENCH_CHANNELS_CAPACITY", "100000"))
elif _layer == "djws":
    _config = {"address": os.environ["BENCH_BROKER"]}
elif _layer == "nats":
    _config = {"servers": [os.environ["BENCH_NATS_URL"]]}
CHANNEL_LAYERS = {"default": {"BACKEND": _LAYERS[_layer], "CONFIG": _config}}
