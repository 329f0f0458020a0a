"""The seed's import path for :func:`django_ws_client.db.database_sync_to_async`."""

from django_ws_client.db import database_sync_to_async

__all__ = ["database_sync_to_async"]
