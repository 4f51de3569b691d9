"""MongoDB access for the event log and read views, through mongoengine.

FerretDB v1 (used in development and CI) has no multi-document transactions,
so every write here is idempotent on its own: inserts keyed by event id, and
view updates guarded by the aggregate version.
"""

from typing import Any

import mongoengine
from django.conf import settings
from mongoengine import Document
from mongoengine.errors import NotUniqueError


def connect(uri: str | None = None) -> None:
    """Register the default connection. Lazy: no I/O until the first query."""
    mongoengine.disconnect()
    mongoengine.connect(
        host=uri or settings.MONGODB_URI,
        connect=False,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=settings.MONGODB_TIMEOUT_MS,
        connectTimeoutMS=settings.MONGODB_TIMEOUT_MS,
        socketTimeoutMS=settings.MONGODB_TIMEOUT_MS * 2,
    )


def upsert_if_newer(document: type[Document], *, key: Any, version: int, fields: dict[str, Any]) -> bool:
    """Set ``fields`` on the view row ``key`` unless it already holds ``version`` or newer.

    The filter only matches an older row; when none matches, the upsert tries
    to insert ``key``, which fails on the unique ``_id`` if a newer row is
    there. So a duplicate or out-of-order event never overwrites newer state.
    Returns True when the row changed.
    """
    updates = {f"set__{name}": value for name, value in fields.items()}
    try:
        document.objects(pk=key, version__lt=version).update_one(upsert=True, set__version=version, **updates)
    except NotUniqueError:
        return False
    return True


def insert_once(document: type[Document], *, key: Any, fields: dict[str, Any]) -> None:
    """Insert the row ``key`` if it is absent; a second call changes nothing."""
    updates = {f"set_on_insert__{name}": value for name, value in fields.items()}
    try:
        document.objects(pk=key).update_one(upsert=True, **updates)
    except NotUniqueError:
        pass  # a concurrent insert of the same key won the race: same content
