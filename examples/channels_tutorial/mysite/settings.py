"""Settings of the Channels tutorial's ``mysite``, as the tutorial leaves them, with one
block changed: ``CHANNEL_LAYERS`` points at a django-ws broker instead of Redis.

The rest is the tutorial's: ``ASGI_APPLICATION`` names Channels' router and the
consumers import ``channels``. Only ``"daphne"`` is left out of INSTALLED_APPS: uvicorn
serves this project (``uvicorn mysite.asgi:application --workers 2``), and daphne's
``runserver`` is not used.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# Where the database goes (the tests point it at a temporary folder).
DATA_DIR = Path(os.environ.get("TUTORIAL_DATA_DIR", BASE_DIR))

SECRET_KEY = "django-insecure-tutorial-key-for-development-only"
DEBUG = True
ALLOWED_HOSTS = []

INSTALLED_APPS = [
    "chat",
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
ASGI_APPLICATION = "mysite.asgi.application"

# The tutorial's block was:
#     "BACKEND": "channels_redis.core.RedisChannelLayer",
#     "CONFIG": {"hosts": [("127.0.0.1", 6379)]},
# CONFIG takes what WEBSOCKET_TRANSPORT_BACKENDS takes: an address, a brokers list, TLS...
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "django_ws_client.layers.GRPCChannelLayer",
        "CONFIG": {"address": os.environ.get("TUTORIAL_BROKER", "127.0.0.1:50051")},
    },
}

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
    }
}

AUTH_PASSWORD_VALIDATORS = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
