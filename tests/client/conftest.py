"""In-process tests of the client package run against the test project's settings."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1] / "project"
_db_dir = tempfile.mkdtemp(prefix="django-ws-client-tests-")
os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
os.environ["TEST_DATABASE"] = str(Path(_db_dir) / "db.sqlite3")
os.environ.setdefault("TEST_BROKER", f"unix:{Path(_db_dir) / 'no-broker.sock'}")
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

import django  # noqa: E402

django.setup()


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[None]:
    from django.core.management import call_command
    from django.test.utils import setup_test_environment, teardown_test_environment

    call_command("migrate", verbosity=0)
    # As under `manage.py test` or pytest-django: in-memory layers configured in
    # settings are in-process only inside Django's test environment.
    setup_test_environment()
    yield
    teardown_test_environment()
