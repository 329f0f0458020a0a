"""django-ws: websockets for Django, shaped like Channels, carried over gRPC.

Apps import consumers from :mod:`django_ws_client.consumers`, the channel layer from
:mod:`django_ws_client.transport`, and run ``manage.py websockets_server``.
"""

DISTRIBUTION = "django-ws-grpc"
"""The name to ``pip install`` (``django-ws`` on PyPI is another project); the import
names are ``django_ws_client``, ``django_ws_edge``, ``django_ws_broker`` and
``django_ws_proto``."""

default_app_config = "django_ws_client.apps.DjangoWsConfig"
