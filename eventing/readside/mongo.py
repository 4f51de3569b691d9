"""MongoDB access for the event log and read views, through mongoengine.

FerretDB v1 (used in development and CI) has no multi-document transactions,
so every write here is idempotent on its own: inserts keyed by event id, and
view updates guarded by the aggregate version.

FerretDB v1's SQLite backend only hands a filter of exactly ``{"_id": …}`` to
SQLite; any other filter makes it load and decode the whole collection. With
scripts/patches/ferretdb-v1.24.2-id-index.patch those ``_id`` lookups use the
unique ``_id`` index, so they cost the same however large the collection is.
On MongoDB all of these are indexed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import bson
import mongoengine
from bson.codec_options import CodecOptions
from django.conf import settings
from mongoengine import Document
from mongoengine.errors import NotUniqueError
from pymongo.collection import Collection

from eventing.transport.client import get_redis


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
        socketTimeoutMS=settings.MONGODB_SOCKET_TIMEOUT_MS,
    )


@dataclass(frozen=True)
class RowChange:
    """What one event does to one view row.

    ``fields`` change only when ``version`` is newer than the row's; ``facts``
    (values that never change) and ``add_to_set`` members apply whatever the
    version. So rows converge to the newest state whatever the order of the
    events and however often each comes.
    """

    key: str
    version: int
    fields: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    add_to_set: dict[str, Any] = field(default_factory=dict)

    def normalized(self) -> RowChange:
        """The change as MongoDB will store it (datetimes in UTC to the millisecond), so
        comparing a stored row with a new one works."""
        doc = _as_stored({"fields": self.fields, "facts": self.facts, "add_to_set": self.add_to_set})
        return RowChange(self.key, self.version, doc["fields"], doc["facts"], doc["add_to_set"])


_STORED: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)


def _as_stored(doc: dict[str, Any]) -> dict[str, Any]:
    return bson.decode(bson.encode(doc), codec_options=_STORED)


def apply_change(row: dict[str, Any] | None, change: RowChange) -> dict[str, Any]:
    """The row after ``change``: the rule every view write follows, live or replayed."""
    new: dict[str, Any] = dict(row) if row else {"_id": change.key, "version": 0}
    new.update(change.facts)
    for name, member in change.add_to_set.items():
        members: list[Any] = list(new.get(name) or [])
        if member not in members:
            members.append(member)
        new[name] = members
    if change.version > new.get("version", 0):
        new.update(change.fields)
        new["version"] = change.version
    return new


def upsert_if_newer(collection: Collection[dict[str, Any]], change: RowChange) -> bool:
    """Apply ``change`` to its row in ``collection``. Returns True when the row changed.

    FerretDB v1 does not apply an update atomically (it reads, then writes, and
    concurrent updates of one document lose writes), so the read-change-write
    runs under a short per-row lock in Redis. Every query names only ``_id``,
    the one filter FerretDB hands down to its storage.
    """
    change = change.normalized()
    with _row_lock(collection.name, change.key):
        current = collection.find_one({"_id": change.key})
        new = apply_change(current, change)
        if new == current:
            return False
        if current is None:
            collection.insert_one(new)
        else:
            collection.replace_one({"_id": change.key}, new)
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

    A plain insert, not an upsert: one round trip, checked by the unique ``_id``
    index, and never the read-then-write FerretDB v1 makes of an update.
    """
    try:
        document.save(force_insert=True)
    except NotUniqueError:
        return False  # an earlier delivery already wrote it: same content
    return True
