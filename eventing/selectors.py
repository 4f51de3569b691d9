"""Queries of the bus's own records: the event log, timelines, and the dead letters."""

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypedDict

from django.db.models import Q, QuerySet

from eventing.contract.consumers import consumers_of, event_log_writer
from eventing.contract.errors import EventError
from eventing.contract.events import event_class
from eventing.models import DeadLetter, DeadLetterAction, ProcessedEvent
from eventing.readside.event_index import EventsByAggregate, EventsByCorrelation, indexed_records
from eventing.readside.event_log import aware
from eventing.readside.event_log import collection as event_log_collection
from eventing.readside.projections import view_objects

_NEVER = datetime.min.replace(tzinfo=UTC)


LoggedEvent = dict[str, Any]  # an event log record, its id also under "id"


def _logged(record: dict[str, Any]) -> LoggedEvent:
    return {
        **record,
        "id": record["_id"],
        "occurred_at": aware(record["occurred_at"]),
        "recorded_at": aware(record.get("recorded_at")),
    }


class LogQueryError(ValueError):
    """A listing of the log that no index serves."""


def event_log_list(
    *,
    correlation_id: str | None = None,
    aggregate_id: str | None = None,
    event_type: str | None = None,
    aggregate_type: str | None = None,
    newest_first: bool = False,
) -> list[LoggedEvent]:
    """One business transaction's or one aggregate's logged events, in log order: one lookup of the
    log's index by ``_id``, one of the records it lists by theirs, the other filters applied to those. The
    whole log is never filtered (FerretDB would scan it): without a correlation id or an aggregate id this
    raises LogQueryError."""
    if correlation_id:
        records = indexed_records(view_objects(EventsByCorrelation)(pk=correlation_id).first())
    elif aggregate_id:
        records = indexed_records(view_objects(EventsByAggregate)(pk=aggregate_id).first())
    else:
        raise LogQueryError("name a correlation id or an aggregate id: the log is listed by one of them")
    wanted = {
        "aggregate_id": aggregate_id,
        "type": event_type,
        "aggregate_type": aggregate_type,
    }
    events = [_logged(r) for r in records if all(not value or r.get(name) == value for name, value in wanted.items())]
    return events[::-1] if newest_first else events


def event_log_page(*, page: int, page_size: int) -> tuple[list[LoggedEvent], bool]:
    """One page of the whole log in the order it was logged (oldest first), and whether another page
    follows. Never counted: FerretDB counts by scanning, while a page is read straight off the log."""
    start = (page - 1) * page_size
    records = list(event_log_collection().find({}).skip(start).limit(page_size + 1))
    return [_logged(r) for r in records[:page_size]], len(records) > page_size


def event_log_get(*, event_id: str) -> LoggedEvent | None:
    record = event_log_collection().find_one({"_id": event_id})
    return _logged(record) if record is not None else None


def event_producer(event_type: str) -> str | None:
    """The app that publishes ``event_type`` (its class's top package); None for a type this code does not know."""
    try:
        return event_class(event_type).__module__.split(".")[0]
    except EventError:
        return None


def event_consumers_expected(event_type: str) -> list[str]:
    """The consumers with a handler for ``event_type``. An unknown type is refused by every consumer."""
    if event_producer(event_type) is None:
        return []
    return consumers_of(event_type)


def _uuids(values: list[str]) -> list[uuid.UUID]:
    """The values that are UUIDs: the inbox keys events by UUID, and a malformed id would fail the whole query."""
    parsed = []
    for value in values:
        try:
            parsed.append(uuid.UUID(value))
        except ValueError:
            continue
    return parsed


class ProcessedBy(TypedDict):
    consumer: str
    at: datetime | None


class TimelineEvent(TypedDict):
    id: str
    type: str
    version: int
    occurred_at: datetime
    producer: str | None
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    causation_id: str | None
    trace_id: str | None
    data: dict[str, Any]
    consumers_expected: list[str]
    processed_by: list[ProcessedBy]
    dead_letters: list[DeadLetter]


class Timeline(TypedDict):
    correlation_id: str
    event_count: int
    events: list[TimelineEvent]
    dead_letters: list[DeadLetter]


def timeline_get(*, correlation_id: str) -> Timeline | None:
    """Every logged event of one business transaction in time order, with who applied each and what was
    dead-lettered, plus the dead letters of that transaction whose event never reached the log.
    None when nothing at all is known about ``correlation_id``.

    Three queries whatever the number of events: the transaction's log index (by ``_id``), the inbox, the
    dead letters. The timeline is as
    complete as the event log: an event the projections consumer has not logged yet is not in it.
    """
    records = event_log_list(correlation_id=correlation_id)
    event_ids = [record["id"] for record in records]

    processed: dict[str, list[ProcessedBy]] = {event_id: [] for event_id in event_ids}
    if event_ids:
        for row in ProcessedEvent.objects.filter(event_id__in=_uuids(event_ids)).order_by("processed_at", "consumer"):
            processed[str(row.event_id)].append({"consumer": row.consumer, "at": row.processed_at})

    dead_letters_by_event: dict[str, list[DeadLetter]] = {event_id: [] for event_id in event_ids}
    unlogged_dead_letters: list[DeadLetter] = []
    for dead_letter in DeadLetter.objects.filter(Q(correlation_id=correlation_id) | Q(event_id__in=event_ids)).order_by(
        "first_failed_at", "id"
    ):
        if dead_letter.event_id in dead_letters_by_event:
            dead_letters_by_event[dead_letter.event_id].append(dead_letter)
        else:
            unlogged_dead_letters.append(dead_letter)

    if not records and not unlogged_dead_letters:
        return None

    events: list[TimelineEvent] = []
    for record in records:
        processed_by = [
            *processed[record["id"]],
            ProcessedBy(consumer=event_log_writer().name, at=record["recorded_at"]),
        ]
        # Records logged before recorded_at existed sort last.
        processed_by.sort(key=lambda item: (item["at"] is None, item["at"] or _NEVER, item["consumer"]))
        events.append(
            TimelineEvent(
                id=record["id"],
                type=record["type"],
                version=record["version"],
                occurred_at=record["occurred_at"],
                producer=event_producer(record["type"]),
                aggregate_type=record["aggregate_type"],
                aggregate_id=record["aggregate_id"],
                aggregate_version=record["aggregate_version"],
                causation_id=record.get("causation_id"),
                trace_id=record.get("trace_id"),
                data=record.get("data") or {},
                consumers_expected=event_consumers_expected(record["type"]),
                processed_by=processed_by,
                dead_letters=dead_letters_by_event[record["id"]],
            )
        )
    return Timeline(
        correlation_id=correlation_id, event_count=len(events), events=events, dead_letters=unlogged_dead_letters
    )


def dead_letter_filter(
    *,
    group: str | None = None,
    event_type: str | None = None,
    status: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    search: str | None = None,
) -> QuerySet[DeadLetter]:
    """Dead letters, newest first, by the same filters the admin offers."""
    query = DeadLetter.objects.all()
    if group:
        query = query.filter(consumer_group=group)
    if event_type:
        query = query.filter(event_type=event_type)
    if status:
        query = query.filter(status=status)
    if reason:
        query = query.filter(reason=reason)
    if since:
        query = query.filter(created_at__gte=since)
    if search:
        query = query.filter(Q(event_id=search) | Q(correlation_id=search) | Q(entry_id=search))
    return query.order_by("-created_at")


def dead_letter_find(*, ids: Iterable[int]) -> tuple[list[DeadLetter], list[int]]:
    """The dead letters with these ids, in the order given, and the ids that match none."""
    wanted = list(dict.fromkeys(ids))
    found = DeadLetter.objects.in_bulk(wanted)
    return [found[pk] for pk in wanted if pk in found], [pk for pk in wanted if pk not in found]


def dead_letter_actions(*, dead_letter: DeadLetter) -> QuerySet[DeadLetterAction]:
    """Its audit trail, oldest first."""
    return dead_letter.actions.order_by("at", "id")


def dead_letter_payload_pretty(dead_letter: DeadLetter) -> str:
    """The entry's fields as indented JSON; an envelope in ``data`` is decoded and indented too,
    so it reads as one document. Bytes that are not UTF-8 show as {"base64": ...}; anything that is
    not JSON, or too deep to indent, is shown exactly as stored."""
    try:
        fields = json.loads(dead_letter.payload)
    except ValueError:
        return dead_letter.payload
    if isinstance(fields, dict) and isinstance(fields.get("data"), str):
        try:  # undecodable data stays as it was read
            return _indented({**fields, "data": json.loads(fields["data"])})
        except (ValueError, RecursionError, UnicodeEncodeError):
            pass
    return _indented(fields)


def _indented(doc: Any) -> str:
    """``doc`` as indented JSON that encodes as UTF-8 (JSON can spell a lone surrogate; a page cannot)."""
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False)
    text.encode()
    return text
