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

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import bson
import mongoengine
from bson.codec_options import CodecOptions
from django.conf import settings
from pymongo import MongoClient, ReplaceOne
from pymongo.collection import Collection

from eventing.transport.client import LuaScript, get_redis


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
    version. ``entries`` are members of keyed maps in the row (``{field: {key:
    entry}}``): an entry is set when the map lacks its key or when its own
    ``"version"`` is newer than the stored entry's (without versions, the first
    write stays). So rows converge to the newest state whatever the order of
    the events and however often each comes.
    """

    key: str
    version: int
    fields: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    add_to_set: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def normalized(self) -> RowChange:
        """The change as MongoDB will store it (datetimes in UTC to the millisecond), so
        comparing a stored row with a new one works."""
        doc = _as_stored(
            {"fields": self.fields, "facts": self.facts, "add_to_set": self.add_to_set, "entries": self.entries}
        )
        return RowChange(self.key, self.version, doc["fields"], doc["facts"], doc["add_to_set"], doc["entries"])


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
            # Kept in one canonical order, so the set's list is the same whatever order its members came in.
            members = sorted([*members, member], key=_canonical)
        new[name] = members
    for name, keyed in change.entries.items():
        stored: dict[str, Any] = dict(new.get(name) or {})
        for member_key, entry in keyed.items():
            existing = stored.get(member_key)
            if existing is None or entry.get("version", 0) > existing.get("version", 0):
                stored[member_key] = entry
        new[name] = stored
    if change.version > new.get("version", 0):
        new.update(change.fields)
        new["version"] = change.version
    return new


def _canonical(member: Any) -> str:
    return json.dumps(member, sort_keys=True, default=str)


def apply_changes(
    collection: Collection[dict[str, Any]],
    changes: list[RowChange],
    *,
    touched: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Apply the changes, in order, to their rows in ``collection``: every touched row is read once and
    written once, and the writes go in one bulk request. Returns the rows that changed, by key; ``touched``,
    when given, receives every row the changes touched as it stands after them, changed or not.

    FerretDB v1 does not apply an update atomically (it reads, then writes, and concurrent
    updates of one document lose writes), and a conditional write would need a filter
    beyond ``_id``, which it evaluates by scanning the collection. So the rule that holds on
    FerretDB and MongoDB alike is one writer per row at a time: the touched rows are locked
    together in Redis (one round trip to take them all, one to free them) for the
    read-fold-write. Every query names only ``_id``: FerretDB serves that from its index.
    """
    if not changes:
        return {}
    folded: dict[str, list[RowChange]] = {}
    for change in changes:
        folded.setdefault(change.key, []).append(change.normalized())
    with row_locks(collection.name, sorted(folded)):
        current = read_rows(collection, list(folded))
        changed: dict[str, dict[str, Any]] = {}
        for key, row_changes in folded.items():
            row = current.get(key)
            new = row
            for change in row_changes:
                new = apply_change(new, change)
            if new is not None and new != row:
                changed[key] = new
        # New rows are inserted (cheaper than an upsert on FerretDB, which looks the row up again);
        # existing ones replaced; each kind in one request.
        inserts = [row for key, row in changed.items() if key not in current]
        if inserts:
            collection.insert_many(inserts, ordered=False)
        replaces = [ReplaceOne({"_id": key}, row) for key, row in changed.items() if key in current]
        for first in range(0, len(replaces), BULK_UPDATES):
            collection.bulk_write(replaces[first : first + BULK_UPDATES], ordered=False)
    if touched is not None:
        touched.update({key: row for key in folded if (row := changed.get(key, current.get(key))) is not None})
    return changed


def read_rows(collection: Collection[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, Any]]:
    """The stored rows of these keys: one ``$in`` query on MongoDB; one ``_id`` lookup each on FerretDB,
    which would scan the collection for ``$in`` but serves a plain ``_id`` from its index."""
    if not is_ferretdb(collection.database.client):
        return {row["_id"]: row for row in collection.find({"_id": {"$in": keys}})}
    # One at a time: FerretDB v1 was seen to wedge a database (every later request timing out) under
    # parallel lookups from one client while it wrote, so they are not spread over threads.
    rows = {}
    for key in keys:
        row = collection.find_one({"_id": key})
        if row is not None:
            rows[key] = row
    return rows


# Updates per bulk request. FerretDB v1 takes a pooled SQLite connection for each update of a request
# and frees them only at its end; its pool holds 100 per database, so a request of 100 updates or more
# waits forever for a connection it holds itself, and wedges the database (every later request, and
# listDatabases, time out). Seen with batches of 100 events; requests of this size never come near it.
BULK_UPDATES = 32

_FERRETDB: dict[int, bool] = {}


def is_ferretdb(client: MongoClient[dict[str, Any]]) -> bool:
    """Whether the server is FerretDB (asked once per client: its buildInfo says so)."""
    known = _FERRETDB.get(id(client))
    if known is None:
        known = _FERRETDB[id(client)] = "ferretdbVersion" in client.admin.command("buildInfo")
    return known


# Takes every lock or none, so two writers never wait on each other's half (no deadlock).
_LOCK_ALL = """
for i, key in ipairs(KEYS) do
  if redis.call('exists', key) == 1 then return 0 end
end
for i, key in ipairs(KEYS) do
  redis.call('set', key, ARGV[1], 'PX', ARGV[2])
end
return 1
"""
_UNLOCK_ALL = """
local freed = 0
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then freed = freed + redis.call('del', key) end
end
return freed
"""
# Rows take milliseconds to write; the expiry only frees the locks of a writer that died holding them.
LOCK_TTL_MS = 10_000
LOCK_WAIT_SECONDS = 30.0


@contextmanager
def row_locks(collection: str, keys: list[str]) -> Iterator[None]:
    """Hold the locks of these rows of ``collection`` (all at once) for the block."""
    lock_all, unlock_all = _lock_scripts()
    # One hash tag per collection: the keys of one call share a Redis Cluster slot. (Not one tag for every
    # lock: a call locks one collection's rows, and a tag per view spreads the locks over the masters.)
    names = [f"eventing:row-lock:{{{collection}}}:{key}" for key in keys]
    token = uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    pause = 0.001
    while not lock_all(keys=names, args=[token, LOCK_TTL_MS]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not lock {len(names)} row(s) of {collection} within {LOCK_WAIT_SECONDS:.0f}s")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    try:
        yield
    finally:
        unlock_all(keys=names, args=[token])


def _lock_scripts() -> tuple[LuaScript, LuaScript]:
    """The lock scripts on this process's client, sent by their digest (EVALSHA), not their text."""
    client = get_redis()
    scripts = _SCRIPTS.get(id(client))
    if scripts is None:
        scripts = _SCRIPTS[id(client)] = (LuaScript(client, _LOCK_ALL), LuaScript(client, _UNLOCK_ALL))
    return scripts


_SCRIPTS: dict[int, tuple[LuaScript, LuaScript]] = {}
