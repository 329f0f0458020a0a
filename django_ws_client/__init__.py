"""django-ws: websockets for Django, shaped like Channels, carried over gRPC.

Apps import consumers from :mod:`django_ws_client.consumers`, the channel layer from
:mod:`django_ws_client.transport`, and run ``manage.py websockets_server``.
"""

default_app_config = "django_ws_client.apps.DjangoWsConfig"
