"""MongoDB access for the event log and read views, through mongoengine.

FerretDB v1 (used in development and CI) has no multi-document transactions,
so every write here is idempotent on its own: inserts keyed by event id, and
view updates guarded by the aggregate version.

FerretDB v1's SQLite backend only hands a filter of exactly ``{"_id": …}`` to
SQLite; any other filter makes it load and decode the whole collection. Its
``_id`` index serves uniqueness on insert, not lookups, so even those cost a
scan there. On MongoDB all of these are indexed.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mongoengine
from django.conf import settings
from mongoengine import Document
from mongoengine.errors import NotUniqueError

from eventing.redis_client import get_redis


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


def upsert_if_newer(
    document: type[Document],
    *,
    key: str,
    version: int,
    fields: dict[str, Any],
    facts: dict[str, Any] | None = None,
    add_to_set: dict[str, Any] | None = None,
) -> bool:
    """Set ``fields`` on the view row ``key`` unless it already holds ``version`` or newer.

    A duplicate or out-of-order event never overwrites newer state. ``facts``
    (values that never change) and ``add_to_set`` members are applied whatever
    the version. Returns True when the row took the new version.

    FerretDB v1 does not apply an update atomically (it reads, then writes, and
    concurrent updates of one document lose writes), so the read-compare-write
    runs under a short per-row lock in Redis. Every query names only ``_id``,
    the one filter FerretDB hands down to its storage.
    """
    collection = document._get_collection()
    always: dict[str, Any] = {}
    if facts:
        always["$set"] = dict(facts)
    if add_to_set:
        always["$addToSet"] = dict(add_to_set)
    with _row_lock(collection.name, key):
        current = collection.find_one({"_id": key}, {"version": 1})
        if current is None:
            row = {"_id": key, **fields, **(facts or {}), "version": version}
            row |= {name: [member] for name, member in (add_to_set or {}).items()}
            collection.insert_one(row)
            return True
        if current.get("version", 0) >= version:
            if always:
                collection.update_one({"_id": key}, always)
            return False
        collection.update_one(
            {"_id": key}, {**always, "$set": {**always.get("$set", {}), **fields, "version": version}}
        )
        return True


@contextmanager
def _row_lock(collection: str, key: str) -> Iterator[None]:
    # Rows take milliseconds to write; the timeout only frees the lock of a
    # writer that died holding it.
    lock = get_redis().lock(f"eventing:row-lock:{collection}:{key}", timeout=10, blocking_timeout=30)
    if not lock.acquire():
        raise TimeoutError(f"could not lock {collection}/{key} within 30s")
    try:
        yield
    finally:
        lock.release()


def insert_once(document: Document) -> bool:
    """Insert ``document`` unless its ``_id`` is already there. True when inserted.

    A plain insert, not an upsert: FerretDB v1 checks the unique ``_id`` index
    on insert, but its SQLite backend scans the whole collection for every
    update, so the ever-growing event log must only ever be inserted into.
    """
    try:
        document.save(force_insert=True)
    except NotUniqueError:
        return False  # an earlier delivery already wrote it: same content
    return True
