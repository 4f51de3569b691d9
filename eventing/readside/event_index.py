"""The event log's indexes: the events of one business transaction, and the events of one aggregate,
each a document of its own, found by ``_id``. FerretDB v1 scans the whole log for any filter but
``_id``, so the timeline and the event listing read these instead of filtering the log.

Both are a projection over every event (``ALL_EVENTS``) of the ``PROJECTIONS`` consumer, so they are
written in the same batches as the log (after it, and after the views clients poll: ``runs_last``),
replayed and verified like any view. An entry is the event's place in the log — its id, and the time and
stream position the log sorts by, as logged when a redelivery finds the event in the log already
(``as_logged``) — and the first one written stays, so redeliveries change nothing. The records themselves
are read from the log by their ids, in one query: an index document is rewritten with every event of its
transaction, and FerretDB's cost of rewriting one grows with what it holds (a copy of each record made it
cost 2.5 times as much).
"""

from typing import Any

from mongoengine import DictField, Document, IntField, StringField

from eventing.contract.consumers import ALL_EVENTS
from eventing.contract.envelope import Envelope
from eventing.readside.event_log import as_logged, log_position, log_sort_key
from eventing.readside.event_log import collection as event_log_collection
from eventing.readside.mongo import RowChange, read_rows
from eventing.readside.projections import Changes, Projection, register


class EventsByCorrelation(Document):  # type: ignore[misc]  # mongoengine ships no types
    """Every logged event of one correlation id: ``events`` maps event id -> its place in the log
    (``log_position``)."""

    id = StringField(primary_key=True)
    events = DictField()
    version = IntField(default=0)

    meta = {"collection": "events_by_correlation"}


class EventsByAggregate(Document):  # type: ignore[misc]  # mongoengine ships no types
    """Every logged event about one aggregate id (an order's, its reservation's, a sku's)."""

    id = StringField(primary_key=True)
    events = DictField()
    version = IntField(default=0)

    meta = {"collection": "events_by_aggregate"}


def index_changes(event: Any, envelope: Envelope) -> Changes:
    entry = {"events": {envelope.id: log_position(as_logged(envelope))}}
    # An event no other caused starts a transaction, and, at its aggregate's first version, the aggregate.
    first = envelope.causation_id is None
    return [
        (
            EventsByCorrelation,
            RowChange(key=envelope.correlation_id, version=0, fields={}, entries=entry, creates=first),
        ),
        (
            EventsByAggregate,
            RowChange(
                key=envelope.aggregate_id,
                version=0,
                fields={},
                entries=entry,
                creates=first and envelope.aggregate_version == 1,
            ),
        ),
    ]


def indexed_records(document: EventsByCorrelation | EventsByAggregate | None) -> list[dict[str, Any]]:
    """The log records of the events an index document lists, in log order: one query by ``_id``."""
    if document is None:
        return []
    ids = sorted(document.events, key=lambda event_id: log_sort_key(document.events[event_id]))
    records = read_rows(event_log_collection(), ids)
    return [records[event_id] for event_id in ids if event_id in records]


event_index = register(
    Projection(
        name="event-index",
        documents=(EventsByCorrelation, EventsByAggregate),
        events=ALL_EVENTS,
        changes=index_changes,
        runs_last=True,  # after the event log, whose records it keeps (as_logged)
    )
)
