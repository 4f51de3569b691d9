"""The event log: every event exactly once, keyed by its id, written by the ``PROJECTIONS`` consumer."""

import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from mongoengine import DateTimeField, DictField, Document, IntField, StringField
from mongoengine.connection import get_db
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from eventing.contract.consumers import ALL_EVENTS, PROJECTIONS, Handler, register_handler
from eventing.contract.envelope import Envelope, utcnow
from eventing.readside.mongo import read_rows

logger = logging.getLogger(__name__)


class EventRecord(Document):  # type: ignore[misc]  # mongoengine ships no types
    id = StringField(primary_key=True)
    type = StringField(required=True)
    version = IntField(required=True)
    occurred_at = DateTimeField(required=True)
    correlation_id = StringField(required=True)
    causation_id = StringField(null=True)
    aggregate_type = StringField(required=True)
    aggregate_id = StringField(required=True)
    aggregate_version = IntField(required=True)
    data = DictField()
    stream = StringField()
    stream_entry_id = StringField()
    # The entry id split into numbers, so the log sorts in stream order.
    stream_ms = IntField()
    stream_seq = IntField()
    recorded_at = DateTimeField()
    trace_id = StringField(null=True)  # the trace it belongs to, when it was raised inside a traced span

    meta = {
        "collection": "event_log",
        "indexes": [
            "correlation_id",
            ("aggregate_type", "aggregate_id", "aggregate_version"),
            "type",
            "occurred_at",
            "recorded_at",  # a rebuild's catch-up reads what was logged since it started
            ("stream", "stream_ms", "stream_seq"),  # a new consumer's catch-up reads below a stream position
        ],
        "ordering": ["occurred_at", "stream_ms", "stream_seq"],
    }


def log_position(envelope: Envelope) -> dict[str, Any]:
    """Where a received event sorts in the log (EventRecord's ordering): when it occurred, then its stream
    position. What the log's indexes keep of it."""
    ms, seq = (int(part) for part in (envelope.entry_id or "0-0").split("-"))
    return {"occurred_at": envelope.occurred_at, "stream_ms": ms, "stream_seq": seq}


def log_sort_key(position: Mapping[str, Any]) -> tuple[datetime, int, int]:
    """The sort key of a log record, or of its position (``log_position``)."""
    return position["occurred_at"], position.get("stream_ms") or 0, position.get("stream_seq") or 0


def log_record(envelope: Envelope) -> dict[str, Any]:
    """The ``event_log`` document of a received event."""
    return {
        "_id": envelope.id,
        "type": envelope.type,
        "version": envelope.version,
        "occurred_at": envelope.occurred_at,
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
        "aggregate_type": envelope.aggregate_type,
        "aggregate_id": envelope.aggregate_id,
        "aggregate_version": envelope.aggregate_version,
        "data": envelope.data,
        "stream": envelope.stream,
        "stream_entry_id": envelope.entry_id,
        **log_position(envelope),
        "recorded_at": envelope.received_at or utcnow(),
        "trace_id": envelope.trace_id,
    }


def event_log_append(*, envelope: Envelope) -> bool:
    """Record the event once; a redelivery changes nothing. True when it was new."""
    return bool(event_log_append_many(envelopes=[envelope]))


def event_log_append_many(*, envelopes: list[Envelope]) -> set[str]:
    """Record the events once each, in one unordered insert; the ids already logged (a redelivery)
    are left as they were. Returns the ids that were new.

    A plain insert, not an upsert: one round trip checked by the unique ``_id`` index, never the
    read-then-write FerretDB v1 makes of an update, and the log is only ever appended to."""
    if not envelopes:
        return set()
    records = {envelope.id: log_record(envelope) for envelope in envelopes}
    try:
        collection().insert_many(list(records.values()), ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        ids = list(records)  # a write error names its record by its index in the insert
        return set(records) - {ids[int(error["index"])] for error in errors}
    return set(records)


DUPLICATE_KEY = 11000


def collection() -> Collection[dict[str, Any]]:
    log: Collection[dict[str, Any]] = get_db()[EventRecord._meta["collection"]]
    return log


def aware(moment: datetime | None) -> datetime | None:
    """``moment`` in UTC when it came back without a time zone (as a stored datetime may)."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def envelope_from_record(record: dict[str, Any]) -> Envelope:
    """The envelope of a logged event (a raw ``event_log`` document)."""
    return Envelope(
        id=record["_id"],
        type=record["type"],
        version=record["version"],
        occurred_at=aware(record["occurred_at"]) or record["occurred_at"],
        correlation_id=record["correlation_id"],
        causation_id=record.get("causation_id"),
        aggregate_type=record["aggregate_type"],
        aggregate_id=record["aggregate_id"],
        aggregate_version=record["aggregate_version"],
        data=record.get("data") or {},
        stream=record.get("stream"),
        entry_id=record.get("stream_entry_id"),
        received_at=aware(record.get("recorded_at")),
    )


def logged_before(*, boundaries: Mapping[str, str], batch_size: int) -> Iterator[list[tuple[str, str, dict[str, str]]]]:
    """Batches of (stream, entry id, stream fields) rebuilt from the log for every event a new group will
    not read from the partitions ``boundaries`` names: those read from a partition at a position below its
    boundary, and those read from any other stream (a stream retired by a repartitioning, another group's
    retry stream), in stream position order."""
    below = [
        {"stream": stream, "$or": [{"stream_ms": {"$lt": ms}}, {"stream_ms": ms, "stream_seq": {"$lt": seq}}]}
        for stream, (ms, seq) in ((stream, _position(boundary)) for stream, boundary in boundaries.items())
    ]
    query = {"$or": [{"stream": {"$nin": list(boundaries)}}, *below]}
    cursor = EventRecord._get_collection().find(query).sort([("stream_ms", 1), ("stream_seq", 1)])
    batch: list[tuple[str, str, dict[str, str]]] = []
    for record in cursor:
        envelope = envelope_from_record(record)
        fields = {"type": envelope.type, "data": envelope.to_json()}
        batch.append((str(record.get("stream") or ""), str(record["stream_entry_id"]), fields))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _position(entry_id: str) -> tuple[int, int]:
    ms, seq = (int(part) for part in entry_id.split("-"))
    return ms, seq


def read_log(query: dict[str, Any], *, batch_size: int) -> Iterator[dict[str, Any]]:
    """The raw ``event_log`` documents matching ``query``, in natural order."""
    yield from collection().find(query, batch_size=batch_size)


# The events of this consumer's current batch that were already in the log (a redelivery), as the log holds
# them: what the log's indexes must keep of them. A redelivery is received later, and maybe from another
# stream position, than the delivery that was logged; a process that logged an event and stopped before it
# wrote the indexes (killed, or its lease moved on) must not leave the indexes with another record than the
# log's. One per thread of execution (a context variable), so consumers run in threads keep their own.
_ALREADY_LOGGED: ContextVar[dict[str, Envelope] | None] = ContextVar("already_logged", default=None)


def as_logged(envelope: Envelope) -> Envelope:
    """``envelope`` as the event log holds it: the first delivery's, when this batch found it already logged."""
    return (_ALREADY_LOGGED.get() or {}).get(envelope.id, envelope)


def append_to_event_log(items: list[tuple[Any, Envelope]]) -> None:
    """Every event of a batch into the log at once, once the ``PROJECTIONS`` consumer's views have their
    changes (``runs_last``: clients wait on the views, not on the log). The events it finds there already are
    read back (``as_logged``), so the log's indexes, registered after it, index them as logged."""
    envelopes = [envelope for _event, envelope in items]
    new = event_log_append_many(envelopes=envelopes)
    repeated = [envelope.id for envelope in envelopes if envelope.id not in new]
    _ALREADY_LOGGED.set(
        {key: envelope_from_record(record) for key, record in read_rows(collection(), repeated).items()}
        if repeated
        else None
    )
    for envelope in envelopes:
        if envelope.id not in new:
            logger.info("%s %s is already in the event log; skipping the duplicate", envelope.type, envelope.id)


register_handler(
    Handler(
        consumer=PROJECTIONS.name,
        event_type=ALL_EVENTS,
        func=append_to_event_log,
        idempotent=True,
        label=f"{__name__}.append_to_event_log",
        batch=True,
        runs_last=True,
    )
)
