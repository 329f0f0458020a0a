"""Settings for the example chat: the seed's configuration, on the embedded broker."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# A development key; set DJANGO_SECRET_KEY in any real deployment.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-chat-insecure-development-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Above staticfiles: its runserver (pages and websockets on one address) wins.
    "django_ws_client",
    "django.contrib.staticfiles",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "chat_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHAT_DATABASE", str(BASE_DIR / "db.sqlite3")),
    }
}

STATIC_URL = "static/"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# Middleware stack called in each connection (the seed's, with origin and session
# checks that a site facing browsers needs).
WEBSOCKET_MIDDLEWARE = [
    "django_ws_client.middlewares.scope.ScopeMiddleware",
    "django_ws_client.middlewares.origin.OriginMiddleware",
    "django_ws_client.middlewares.auth.AuthMiddleware",
    "django_ws_client.middlewares.route.RouteMiddleware",
]

# URL mapping module path
WEBSOCKET_ROUTE_MODULE = "chat_project.routing"

# Transport backend: no address means an embedded broker on a unix socket.
WEBSOCKET_TRANSPORT_BACKENDS = {
    "default": {
        "BACKEND": "django_ws_client.transport.GRPCTransportLayer",
        "CONFIG": {
            **({"address": os.environ["CHAT_BROKER"]} if os.environ.get("CHAT_BROKER") else {}),
            # Chat rooms show who is online (presence.join / presence.leave events).
            "presence_groups": ["chat_*"],
        },
    }
}
