"""Read-view projections: what each event does to which view rows, applied
live by the projections consumer and folded from the event log on replay.

An app declares a projection in its ``read_models.py``, once: registering it
also registers its handler in the consumer that projects the views
(``PROJECTIONS``)::

    order_views = register(Projection(
        name="orders",
        documents=(OrderView, CustomerOrder),
        events=(OrderCreated, OrderConfirmed, ...),
        changes=order_view_changes,          # (event, envelope) -> [(OrderView, RowChange), ...]
        expected_from_database=...,          # optional, for verify_projections
    ))

Views are read and written through an alias, so a rebuild can fill new
collections while the old ones serve, then switch every view of a rebuild in
one write (``switch_views``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mongoengine import Document
from mongoengine.connection import get_db
from mongoengine.queryset import QuerySet
from pymongo.collection import Collection

from eventing.contract.consumers import ALL_EVENTS, PROJECTIONS, Handler, register_handler
from eventing.contract.envelope import Envelope
from eventing.contract.errors import DeclarationError
from eventing.contract.events import Event
from eventing.readside.mongo import RowChange, apply_change, apply_changes

Changes = list[tuple[type[Document], RowChange]]

# One document holds every view's live collection, so a switch is one atomic write.
ALIASES_COLLECTION = "view_aliases"
ALIASES_ID = "views"
# How long a process trusts the aliases it read; a rebuild waits longer than
# this after switching before it drops the old collections.
ALIAS_TTL_SECONDS = 1.0


@dataclass(frozen=True)
class Projection:
    name: str
    documents: tuple[type[Document], ...]
    # The event classes it projects; ALL_EVENTS for every event, known or not to this code.
    events: tuple[type[Event], ...] | str
    changes: Callable[[Any, Envelope], Changes]
    # Per document class, the rows the relational state says the view should hold
    # (only the fields the database knows), for verify_projections.
    expected_from_database: Callable[[], dict[type[Document], dict[str, dict[str, Any]]]] | None = field(
        default=None, compare=False
    )
    # Changes of other documents that follow from a changed row (a listing of the rows it lists):
    # derive(document, row) -> Changes. A pure function of the row, so live writes and a replay agree.
    derive: Callable[[type[Document], dict[str, Any]], Changes] | None = field(default=None, compare=False)
    # Written after the other projections of a batch (Handler.runs_last): the event log's own indexes.
    runs_last: bool = False

    @property
    def event_types(self) -> tuple[str, ...]:
        if isinstance(self.events, str):
            return (self.events,)
        return tuple(cls.TYPE for cls in self.events)

    def apply(self, event: Event, envelope: Envelope) -> None:
        """Apply one event to the live views."""
        self.apply_batch([(event, envelope)])

    def apply_batch(
        self,
        items: list[tuple[Any, Envelope]],
        *,
        collection_for: Callable[[type[Document]], Collection[dict[str, Any]]] | None = None,
    ) -> None:
        """Apply a batch of events to the views (the live ones unless ``collection_for`` says otherwise):
        their changes are folded per row in memory, then each touched row is read once and written once,
        and so on for the rows their changes derive — from every touched row, changed or not: a row written by
        a process that stopped before the rows derived from it leaves a redelivery nothing to change there,
        and the derived rows must still be brought up to date (they too change only when they differ)."""
        where = collection_for or active_collection
        pending: Changes = [change for event, envelope in items for change in self.changes(event, envelope)]
        while pending:
            by_document: dict[type[Document], list[RowChange]] = {}
            for document, change in pending:
                by_document.setdefault(document, []).append(change)
            pending = []
            for document, changes in by_document.items():
                touched: dict[str, dict[str, Any]] = {}
                apply_changes(where(document), changes, touched=touched)
                if self.derive is not None:
                    pending += [c for row in touched.values() for c in self.derive(document, row)]


_PROJECTIONS: dict[str, Projection] = {}


def register(projection: Projection) -> Projection:
    """Make the projection known to replays and checks, and run it live in the ``PROJECTIONS`` consumer."""
    existing = _PROJECTIONS.get(projection.name)
    if existing is not None:
        if existing != projection:
            raise DeclarationError(f"projection {projection.name!r} is registered twice")
        return existing
    _PROJECTIONS[projection.name] = projection
    for event_type in projection.event_types:
        register_handler(
            Handler(
                consumer=PROJECTIONS.name,
                event_type=event_type,
                func=projection.apply_batch,
                idempotent=True,
                label=f"{projection.changes.__module__}.{projection.name} projection",
                batch=True,
                runs_last=projection.runs_last,
            )
        )
    return projection


def projections() -> dict[str, Projection]:
    return dict(_PROJECTIONS)


# -- Aliases --------------------------------------------------------------------

# Per database: (when read, aliases).
_cache: dict[str, tuple[float, dict[str, str]]] = {}


def base_name(document: type[Document]) -> str:
    return str(document._meta["collection"])


def aliases(*, fresh: bool = False) -> dict[str, str]:
    """Base collection name -> the collection that holds the view now."""
    db = get_db()
    read_at, known = _cache.get(db.name, (0.0, {}))
    if fresh or time.monotonic() - read_at > ALIAS_TTL_SECONDS:
        doc = db[ALIASES_COLLECTION].find_one({"_id": ALIASES_ID}) or {}
        known = dict(doc.get("aliases", {}))
        _cache[db.name] = (time.monotonic(), known)
    return known


def active_collection(document: type[Document]) -> Collection[dict[str, Any]]:
    name = base_name(document)
    collection: Collection[dict[str, Any]] = get_db()[aliases().get(name, name)]
    return collection


def view_objects(document: type[Document]) -> QuerySet:
    """``document.objects``, on the collection that holds the view now (thread-safe)."""
    return QuerySet(document, active_collection(document))


def switch_views(new: dict[str, str]) -> dict[str, str]:
    """Point the views at new collections in one write. Returns what they pointed at before."""
    current = aliases(fresh=True)
    get_db()[ALIASES_COLLECTION].replace_one(
        {"_id": ALIASES_ID}, {"_id": ALIASES_ID, "aliases": {**current, **new}}, upsert=True
    )
    aliases(fresh=True)
    return {name: current.get(name, name) for name in new}


# -- Folding ----------------------------------------------------------------------


class Fold:
    """Views built in memory from events, with the same rule as the live writes."""

    def __init__(self, selected: Iterable[Projection]) -> None:
        self.projections = list(selected)
        self.by_type: dict[str, list[Projection]] = {}
        for projection in self.projections:
            for event_type in projection.event_types:
                self.by_type.setdefault(event_type, []).append(projection)
        self.rows: dict[type[Document], dict[str, dict[str, Any]]] = {
            document: {} for p in self.projections for document in p.documents
        }
        self.events = 0

    def apply(self, envelope: Envelope) -> None:
        interested = [*self.by_type.get(envelope.type, []), *self.by_type.get(ALL_EVENTS, [])]
        if not interested:
            return
        event = envelope.event() if envelope.type in self.by_type else None
        for projection in interested:
            for document, change in projection.changes(event, envelope):
                self._fold(projection, document, change)
        self.events += 1

    def _fold(self, projection: Projection, document: type[Document], change: RowChange) -> None:
        rows = self.rows[document]
        change = change.normalized()
        old = rows.get(change.key)
        new = rows[change.key] = apply_change(old, change)
        if projection.derive is not None and new != old:
            for derived_document, derived in projection.derive(document, new):
                self._fold(projection, derived_document, derived)
