"""Rebuilding read views from the event log, blue/green, and checking them.

A rebuild folds the log in memory with the same rule the live projections
use, bulk-inserts the result into new collections while the API keeps
serving the old ones, applies what was logged meanwhile, switches every view
of the rebuild in one write, applies what was logged during the switch, and
drops the old collections. Until the switch nothing live is touched: an
interrupted rebuild only leaves new collections behind, which the next run
drops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mongoengine import Document
from mongoengine.connection import get_db
from pymongo.collection import Collection

from eventing.contract.consumers import ALL_EVENTS
from eventing.readside.event_log import envelope_from_record, read_log
from eventing.readside.projections import (
    ALIAS_TTL_SECONDS,
    Fold,
    Projection,
    active_collection,
    aliases,
    base_name,
    projections,
    switch_views,
)

logger = logging.getLogger(__name__)

REBUILD_MARK = "__rebuild_"
# Events logged this long before a catch-up's start are applied again: writes are
# idempotent, and a projections consumer writes its view a moment after the log.
CATCH_UP_OVERLAP = timedelta(seconds=5)

Progress = Callable[[int, int], None]  # (events done, events in all)


class ReplayError(Exception):
    """A rebuild or check was asked for something that does not exist."""


@dataclass
class ReplayResult:
    projections: list[str]
    events: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    collections: dict[str, str] = field(default_factory=dict)
    caught_up: int = 0
    seconds: float = 0.0
    switch_ms: float | None = None
    switched: bool = False

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def select(names: list[str] | None) -> list[Projection]:
    known = projections()
    unknown = sorted(set(names or []) - set(known))
    if unknown:
        raise ReplayError(f"unknown projection(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [known[name] for name in (names or sorted(known))]


def parse_position(value: str) -> dict[str, Any]:
    """A bound given as an ISO time or a stream id ("1700000000000-0"), as log filter parts."""
    if value.count("-") == 1 and all(part.isdigit() for part in value.split("-")):
        ms, seq = (int(part) for part in value.split("-"))
        return {"stream": (ms, seq)}
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ReplayError(f"{value!r} is neither an ISO time nor a stream id like 1700000000000-0") from None
    return {"time": moment if moment.tzinfo else moment.replace(tzinfo=UTC)}


def _type_filter(types: list[str]) -> dict[str, Any]:
    return {} if ALL_EVENTS in types else {"type": {"$in": types}}


def _log_filter(types: list[str], since: str | None, until: str | None) -> dict[str, Any]:
    query: dict[str, Any] = _type_filter(types)
    for bound, op in ((since, "$gte"), (until, "$lte")):
        if not bound:
            continue
        position = parse_position(bound)
        if "time" in position:
            query.setdefault("occurred_at", {})[op] = position["time"]
        else:
            ms, seq = position["stream"]
            strict = "$gt" if op == "$gte" else "$lt"
            query.setdefault("$and", []).append(
                {"$or": [{"stream_ms": {strict: ms}}, {"stream_ms": ms, "stream_seq": {op: seq}}]}
            )
    return query


def fold_log(
    fold: Fold,
    *,
    since: str | None = None,
    until: str | None = None,
    batch_size: int = 2000,
    progress: Progress | None = None,
) -> Fold:
    """Fold the logged events of the fold's projections into it."""
    types = [t for p in fold.projections for t in p.event_types]
    query = _log_filter(types, since, until)
    # The size of the whole log, for the progress bar: counting the matches would
    # cost a scan of the log on FerretDB before the first event is read.
    total = get_db()["event_log"].estimated_document_count()
    for done, record in enumerate(read_log(query, batch_size=batch_size), start=1):
        fold.apply(envelope_from_record(record))
        if progress and done % batch_size == 0:
            progress(done, max(total, done))
    if progress:
        progress(fold.events, fold.events)
    return fold


def _create_indexes(document: type[Document], collection: Any) -> None:
    for spec in document._meta.get("index_specs", []):
        options = {k: v for k, v in spec.items() if k != "fields"}
        collection.create_index(spec["fields"], **options)


def _catch_up(selected: list[Projection], targets: dict[str, str], *, since: datetime, batch_size: int) -> int:
    """Apply events logged since ``since`` to the target collections; returns how many."""
    db = get_db()

    def target(document: type[Document]) -> Collection[dict[str, Any]]:
        collection: Collection[dict[str, Any]] = db[targets[base_name(document)]]
        return collection

    query = {**_type_filter([t for p in selected for t in p.event_types]), "recorded_at": {"$gte": since}}
    applied = 0
    for record in read_log(query, batch_size=batch_size):
        envelope = envelope_from_record(record)
        interested = [p for p in selected if envelope.type in p.event_types or ALL_EVENTS in p.event_types]
        event = envelope.event() if any(envelope.type in p.event_types for p in interested) else None
        for projection in interested:
            projection.apply_batch([(event, envelope)], collection_for=target)
        applied += 1
    return applied


def drop_leftovers(selected: list[Projection]) -> list[str]:
    """Drop collections of rebuilds that never switched (interrupted)."""
    db = get_db()
    live = set(aliases(fresh=True).values())
    bases = {base_name(d) for p in selected for d in p.documents}
    stale = [
        name
        for name in db.list_collection_names()
        if REBUILD_MARK in name and name.split(REBUILD_MARK)[0] in bases and name not in live
    ]
    for name in stale:
        db.drop_collection(name)
    return stale


def replay_views(
    *,
    names: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    dry_run: bool = False,
    batch_size: int = 2000,
    progress: Progress | None = None,
) -> ReplayResult:
    """Rebuild the named views (default all) from the event log, blue/green.

    ``since`` starts from a copy of the live views and re-applies the events
    from then on; ``until`` builds the views as of then and leaves them under
    their rebuild names without switching (live views never go back in time).
    """
    selected = select(names)
    result = ReplayResult(projections=[p.name for p in selected])
    db = get_db()
    if not dry_run:
        for name in drop_leftovers(selected):
            logger.warning("dropped %s, left by an interrupted rebuild", name)
    started_wall = datetime.now(UTC)
    started = time.monotonic()
    fold = Fold(selected)
    if since:  # re-apply a window of history on top of what the views hold now
        for document in fold.rows:
            fold.rows[document] = {row["_id"]: row for row in active_collection(document).find()}
    fold_log(fold, since=since, until=until, batch_size=batch_size, progress=progress)
    result.events = fold.events
    result.rows = {base_name(d): len(rows) for d, rows in fold.rows.items()}
    if dry_run:
        result.seconds = time.monotonic() - started
        return result

    tag = started_wall.strftime("%Y%m%d%H%M%S")
    targets = {base_name(d): f"{base_name(d)}{REBUILD_MARK}{tag}" for d in fold.rows}
    result.collections = targets
    switched = False
    try:
        for document, rows in fold.rows.items():
            collection = db[targets[base_name(document)]]
            docs = list(rows.values())
            for start in range(0, len(docs), batch_size):
                collection.insert_many(docs[start : start + batch_size], ordered=False)
            _create_indexes(document, collection)
        result.seconds = time.monotonic() - started
        if until:
            logger.info("views as of %s left in %s (not switched)", until, ", ".join(targets.values()))
            return result
        result.caught_up = _catch_up(selected, targets, since=started_wall - CATCH_UP_OVERLAP, batch_size=batch_size)
        switch_started = time.monotonic()
        switch_wall = datetime.now(UTC)
        previous = switch_views(targets)
        switched = True
        result.switch_ms = (time.monotonic() - switch_started) * 1000
        result.switched = True
        # Every process now reads and writes the new collections; apply what the
        # old ones received meanwhile, then drop them.
        time.sleep(ALIAS_TTL_SECONDS + 0.5)
        result.caught_up += _catch_up(selected, targets, since=switch_wall - CATCH_UP_OVERLAP, batch_size=batch_size)
        for old in previous.values():
            if old not in targets.values():
                db.drop_collection(old)
    except BaseException:
        if not switched:
            for name in targets.values():
                db.drop_collection(name)
            logger.warning("rebuild interrupted before the switch: live views untouched, new collections dropped")
        raise
    return result


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "_id"}


def verify_views(*, names: list[str] | None = None, progress: Progress | None = None) -> list[str]:
    """Fold the whole log and compare it with the live views and with the
    relational state. Returns one line per difference (empty: no drift)."""
    selected = select(names)
    fold = fold_log(Fold(selected), progress=progress)
    differences: list[str] = []
    for projection in selected:
        expected_db = projection.expected_from_database() if projection.expected_from_database else {}
        for document in projection.documents:
            view = base_name(document)
            folded = fold.rows[document]
            live = {row["_id"]: row for row in active_collection(document).find()}
            for key in sorted(set(folded) - set(live)):
                differences.append(f"{view}/{key}: in the event log but missing from the view")
            for key in sorted(set(live) - set(folded)):
                differences.append(f"{view}/{key}: in the view but no event explains it")
            for key in sorted(set(folded) & set(live)):
                if _strip(folded[key]) != _strip(live[key]):
                    fields = sorted(
                        name
                        for name in set(folded[key]) | set(live[key])
                        if folded[key].get(name) != live[key].get(name)
                    )
                    differences.append(f"{view}/{key}: the view differs from the log in {', '.join(fields)}")
            for key, expected in sorted(expected_db.get(document, {}).items()):
                row = live.get(key)
                if row is None:
                    differences.append(f"{view}/{key}: in the database but missing from the view")
                    continue
                wrong = {name: (row.get(name), value) for name, value in expected.items() if row.get(name) != value}
                for name, (seen, want) in sorted(wrong.items()):
                    differences.append(f"{view}/{key}: {name} is {seen!r} in the view but {want!r} in the database")
    return differences
