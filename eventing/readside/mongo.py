"""MongoDB access for the event log and read views, through mongoengine.

FerretDB v1 (used in development and CI) has no multi-document transactions,
so every write here is idempotent on its own: inserts keyed by event id, and
view updates guarded by the aggregate version.

FerretDB v1's SQLite backend only hands a filter of exactly ``{"_id": …}`` to
SQLite; any other filter makes it load and decode the whole collection. With
scripts/patches/ferretdb-v1.24.2-id-index.patch those ``_id`` lookups use the
unique ``_id`` index, so they cost the same however large the collection is;
scripts/patches/ferretdb-v1.24.2-id-in.patch hands it ``{"_id": {"$in": […]}}``
too, so any number of known rows is one query. On MongoDB all of these are indexed.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import bson
import mongoengine
from bson.codec_options import CodecOptions
from django.conf import settings
from pymongo import ReplaceOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

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
    version (``entry_version``) is newer than the stored entry's (without versions, the first
    write stays). So rows converge to the newest state whatever the order of
    the events and however often each comes.

    ``creates`` says the event most likely makes the row (an order's first event, a transaction's): the
    live write then inserts it without looking it up first, and reads it only if it was there after all.
    A hint that proves wrong costs a refused insert, never a wrong row.
    """

    key: str
    version: int
    fields: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    add_to_set: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # each entry a dict or a packed str
    creates: bool = False

    def normalized(self) -> RowChange:
        """The change as MongoDB will store it (datetimes in UTC to the millisecond), so
        comparing a stored row with a new one works."""
        doc = _as_stored(
            {"fields": self.fields, "facts": self.facts, "add_to_set": self.add_to_set, "entries": self.entries}
        )
        return RowChange(
            self.key, self.version, doc["fields"], doc["facts"], doc["add_to_set"], doc["entries"], self.creates
        )


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
            if existing is None or entry_version(entry) > entry_version(existing):
                stored[member_key] = entry
        new[name] = stored
    if change.version > new.get("version", 0):
        new.update(change.fields)
        new["version"] = change.version
    return new


def entry_version(entry: dict[str, Any] | str) -> int:
    """An entry's version: its ``"version"``, or the number a packed entry (a string, ``"<version>|…"``)
    starts with. A map of many entries is cheaper packed: FerretDB's cost of reading and rewriting a
    document grows with its fields, and a string is one field."""
    if isinstance(entry, str):
        head = entry.partition("|")[0]
        return int(head) if head.isdigit() else 0
    return int(entry.get("version", 0))


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

    A row this process wrote last is not read again: the lock hands back each row's stamp, the mark
    of its last write (``ROW_CACHE``).
    """
    if not changes:
        return {}
    folded: dict[str, list[RowChange]] = {}
    for change in changes:
        folded.setdefault(change.key, []).append(change.normalized())
    keys = sorted(folded)
    with row_locks(collection, keys) as lock:
        cached = ROW_CACHE.rows(collection, lock.stamps)
        current = {key: row for key, row in cached.items() if row is not None}
        # Rows no one wrote lately that the changes most likely create are not looked up.
        assumed_new = {key for key in keys if key not in cached and any(c.creates for c in folded[key])}
        current |= read_rows(collection, [key for key in keys if key not in cached and key not in assumed_new])
        changed = _fold_rows(folded, current)
        # New rows are inserted (cheaper than an upsert on FerretDB, which looks the row up again);
        # existing ones replaced; each kind in one request. A row known from the cache is upserted: should
        # the database have lost it since (a server that restarted without its last writes), it comes back.
        inserts = [row for key, row in changed.items() if key not in current]
        if inserts:
            there = _insert_new(collection, inserts)
            if there:  # assumed new, but stored: the changes apply to the stored rows instead
                current |= read_rows(collection, there)
                for key in there:
                    del changed[key]
                changed |= _fold_rows({key: folded[key] for key in there}, current)
        replaces = [
            ReplaceOne({"_id": key}, row, upsert=key in cached) for key, row in changed.items() if key in current
        ]
        for first in range(0, len(replaces), BULK_UPDATES):
            collection.bulk_write(replaces[first : first + BULK_UPDATES], ordered=False)
        lock.written = {key: changed.get(key, current.get(key)) for key in keys}
    if touched is not None:
        touched.update({key: row for key in folded if (row := changed.get(key, current.get(key))) is not None})
    return changed


def _fold_rows(folded: dict[str, list[RowChange]], current: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each row after its changes, for the rows they change."""
    changed: dict[str, dict[str, Any]] = {}
    for key, row_changes in folded.items():
        row = current.get(key)
        new = row
        for change in row_changes:
            new = apply_change(new, change)
        if new is not None and new != row:
            changed[key] = new
    return changed


def _insert_new(collection: Collection[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """Insert rows believed new in one request; the keys of those that were stored already."""
    try:
        collection.insert_many(rows, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        return [rows[error["index"]]["_id"] for error in errors]
    return []


DUPLICATE_KEY = 11000


# Keys per ``$in`` query: the patched FerretDB serves up to 1,000 from its index.
READ_IN = 1000


def read_rows(collection: Collection[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, Any]]:
    """The stored rows of these keys: one ``$in`` query per ``READ_IN`` keys, which MongoDB serves from its
    ``_id`` index, and FerretDB too with scripts/patches/ferretdb-v1.24.2-id-in.patch (unpatched, it would
    scan the collection)."""
    rows: dict[str, dict[str, Any]] = {}
    for first in range(0, len(keys), READ_IN):
        rows |= {row["_id"]: row for row in collection.find({"_id": {"$in": keys[first : first + READ_IN]}})}
    return rows


# Updates per bulk request. FerretDB v1 takes a pooled SQLite connection for each update of a request
# and frees them only at its end; its pool holds 100 per database, so a request of 100 updates or more
# waits forever for a connection it holds itself, and wedges the database (every later request, and
# listDatabases, time out). Seen with batches of 100 events; requests of this size never come near it.
BULK_UPDATES = 32


# Takes every lock or none, so two writers never wait on each other's half (no deadlock). KEYS are the
# rows' locks, then their stamps. It hands back each row's stamp and deletes it: while the rows are
# locked no cache may trust them, and a writer that dies before it unlocks leaves them unstamped.
_LOCK_ALL = """
local n = #KEYS / 2
for i = 1, n do
  if redis.call('exists', KEYS[i]) == 1 then return false end
end
local stamps = {}
for i = 1, n do
  redis.call('set', KEYS[i], ARGV[1], 'PX', ARGV[2])
  stamps[i] = redis.call('get', KEYS[n + i]) or ''
  redis.call('del', KEYS[n + i])
end
return stamps
"""
# Frees the locks this writer still holds and, when it wrote its rows, stamps them (ARGV[2], or '').
_UNLOCK_ALL = """
local n = #KEYS / 2
local freed = 0
for i = 1, n do
  if redis.call('get', KEYS[i]) == ARGV[1] then
    freed = freed + redis.call('del', KEYS[i])
    if ARGV[2] ~= '' then redis.call('set', KEYS[n + i], ARGV[2], 'PX', ARGV[3]) end
  end
end
return freed
"""
# Rows take milliseconds to write; the expiry only frees the locks of a writer that died holding them.
LOCK_TTL_MS = 10_000
LOCK_WAIT_SECONDS = 30.0
# How long a row's stamp outlives its write: an order's events come within seconds of each other, and a
# stamp per row written in the last minute is what Redis holds for it.
STAMP_TTL_MS = 60_000


@dataclass
class LockedRows:
    """The rows ``row_locks`` holds: the stamps it found, and what the block wrote (row by key, or None)."""

    stamps: dict[str, str]
    written: dict[str, dict[str, Any] | None] | None = None


@contextmanager
def row_locks(collection: Collection[dict[str, Any]], keys: list[str]) -> Iterator[LockedRows]:
    """Hold the locks of these rows of ``collection`` (all at once) for the block. When the block sets
    ``written``, the rows are stamped and cached as this process's own on the way out; should it fail, they
    are left unstamped (their stamps went when they were locked), so every process reads them again."""
    lock_all, unlock_all = _lock_scripts()
    # One hash tag per collection: the keys of one call share a Redis Cluster slot. (Not one tag for every
    # lock: a call locks one collection's rows, and a tag per view spreads the locks over the masters.)
    names = [f"eventing:row-lock:{{{collection.name}}}:{key}" for key in keys]
    names += [stamp_key(collection, key) for key in keys]
    token = uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    pause = 0.001
    while (found := lock_all(keys=names, args=[token, LOCK_TTL_MS])) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"could not lock {len(keys)} row(s) of {collection.name} within {LOCK_WAIT_SECONDS:.0f}s"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    lock = LockedRows(stamps={key: stamp for key, stamp in zip(keys, found, strict=True) if stamp})
    try:
        yield lock
    finally:
        stamp = token if lock.written is not None else ""
        if lock.written is not None:
            ROW_CACHE.put(collection, stamp, lock.written)
        else:
            ROW_CACHE.forget(collection, keys)
        unlock_all(keys=names, args=[token, stamp, STAMP_TTL_MS])


def stamp_key(collection: Collection[dict[str, Any]], key: str) -> str:
    """Where a row's stamp is kept: in its lock's slot."""
    return f"eventing:row-stamp:{{{collection.name}}}:{collection.database.name}:{key}"


class RowCache:
    """The rows this process wrote last, each with the stamp its write left in Redis. A row whose stamp
    in Redis is still the one cached was written by no one since, so it need not be read again: a view
    row touched by several events of one order, or of one customer, is read once. Every view write goes
    through ``apply_changes``, so every write restamps its rows. Bounded: the oldest go first.

    A row is kept as its BSON and decoded with the collection's codec options: a cached row is exactly
    what reading it would return, a copy of its own. Bytes also cost the garbage collector nothing, where
    tens of thousands of nested dicts made every full collection of the process walk them (and a BSON
    decode is about 5x cheaper than the deep copy it replaces)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._rows: OrderedDict[tuple[str, str, str], tuple[str, bytes | None]] = OrderedDict()
        self._lock = threading.Lock()

    def rows(self, collection: Collection[dict[str, Any]], stamps: dict[str, str]) -> dict[str, Any]:
        """The cached rows (None: known to be absent) whose stamp is the one Redis holds."""
        where = (collection.database.name, collection.name)
        hits: dict[str, bytes | None] = {}
        with self._lock:
            for key, stamp in stamps.items():
                cached = self._rows.get((*where, key))
                if cached is not None and cached[0] == stamp:
                    hits[key] = cached[1]
        options = collection.codec_options
        return {key: None if data is None else bson.decode(data, codec_options=options) for key, data in hits.items()}

    def put(self, collection: Collection[dict[str, Any]], stamp: str, rows: dict[str, dict[str, Any] | None]) -> None:
        where = (collection.database.name, collection.name)
        encoded = {key: None if row is None else bson.encode(row) for key, row in rows.items()}
        with self._lock:
            for key, data in encoded.items():
                self._rows[(*where, key)] = (stamp, data)
                self._rows.move_to_end((*where, key))
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)

    def forget(self, collection: Collection[dict[str, Any]], keys: list[str]) -> None:
        where = (collection.database.name, collection.name)
        with self._lock:
            for key in keys:
                self._rows.pop((*where, key), None)


# Some tens of thousands of rows: the rows a projections process touched in the last minutes.
ROW_CACHE = RowCache(capacity=20_000)


def _lock_scripts() -> tuple[LuaScript, LuaScript]:
    """The lock scripts on this process's client, sent by their digest (EVALSHA), not their text."""
    client = get_redis()
    scripts = _SCRIPTS.get(id(client))
    if scripts is None:
        scripts = _SCRIPTS[id(client)] = (LuaScript(client, _LOCK_ALL), LuaScript(client, _UNLOCK_ALL))
    return scripts


_SCRIPTS: dict[int, tuple[LuaScript, LuaScript]] = {}
