"""The Django app: registers the system checks and the ``websockets_server`` command."""

from django.apps import AppConfig


class DjangoWsConfig(AppConfig):
    name = "django_ws_client"
    label = "django_ws"
    verbose_name = "django-ws"

    def ready(self) -> None:
        from django_ws_client import checks  # noqa: F401  (registers the checks)
