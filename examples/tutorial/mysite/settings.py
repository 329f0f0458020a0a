"""Settings of the Channels tutorial's ``mysite``, moved to django-ws.

What changed from the tutorial (docs/migrating-from-channels.md shows both):
``"daphne"`` left INSTALLED_APPS and ``"django_ws_client"`` came in above
``django.contrib.staticfiles``; ``ASGI_APPLICATION`` became ``WEBSOCKET_ROUTE_MODULE``;
``CHANNEL_LAYERS`` (Redis) was deleted: the embedded broker needs no service.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# Where the databases go (the tests point it at a temporary folder).
DATA_DIR = Path(os.environ.get("TUTORIAL_DATA_DIR", BASE_DIR))

SECRET_KEY = "django-insecure-tutorial-key-for-development-only"
DEBUG = True
ALLOWED_HOSTS = []

INSTALLED_APPS = [
    "chat",
    "django_ws_client",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"

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
            ],
        },
    },
]

WSGI_APPLICATION = "mysite.wsgi.application"
# Channels: ASGI_APPLICATION = "mysite.asgi.application"
WEBSOCKET_ROUTE_MODULE = "chat.routing"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
        # Part 4 of the tutorial: the live server's processes need a file test database.
        "TEST": {"NAME": DATA_DIR / "test_db.sqlite3"},
    }
}

AUTH_PASSWORD_VALIDATORS = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
