"""The consumer's only database work: applying deliveries with the inbox, and recording dead letters.

Relational handlers of a chunk run in one transaction together with the chunk's
inbox rows (``ProcessedEvent``), so one commit covers the chunk and a redelivered
event is recognised by its inbox row; when an event fails, the chunk is redone
event by event in savepoints so it rolls back alone. Idempotent (MongoDB)
handlers run outside the transaction.
"""

from __future__ import annotations

import logging
import time
import traceback as tb
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from eventing.consumer.decoding import Delivery, Entry
from eventing.consumer.policy import TRANSIENT_ERRORS, Failure, Kind, TransientFailure, classify
from eventing.contract import context
from eventing.contract.consumers import BatchHandlerFunc, Handler, HandlerFunc
from eventing.contract.envelope import CANONICAL_UUID, Envelope
from eventing.models import ConsumerFence, DeadLetter, ProcessedEvent
from eventing.telemetry import tracing
from eventing.telemetry.metrics import HANDLER_SECONDS, observe_each
from eventing.transport.leases import LeaseLost
from eventing.transport.streams import base_stream

logger = logging.getLogger(__name__)


@dataclass
class HandlerFailure:
    delivery: Delivery
    handler: Handler | None
    error: BaseException
    traceback: str

    @property
    def kind(self) -> Kind:
        return classify(self.error, declared_permanent=self.handler.permanent if self.handler else ())


def apply_transactional(
    chunk: list[Delivery], *, consumer: str, fences: Mapping[str, int] | None = None
) -> tuple[set[str], list[HandlerFailure]]:
    """Apply the relational handlers of a chunk in one transaction. Returns (entry ids done, failures);
    raises TransientFailure when a backing service fails, which rolls the whole chunk back.

    One transaction for the chunk: one statement inserts the chunk's inbox rows (``_inbox_insert``), the
    handlers of the events new to the inbox run, one commit; no savepoints. A concurrent consumer inserting
    the same row first makes this one wait for its commit and then skip the event. When a handler fails,
    the transaction rolls back, the failing event is set aside with its failure, and the rest of the chunk
    is applied again the same way.

    ``fences`` ({partition: lease token}, with leases) are written in each transaction (``fence``): a
    process whose lease was taken over raises LeaseLost there, and none of its effects commit."""
    done = {d.entry.id for d in chunk if not d.transactional}
    todo = [d for d in chunk if d.transactional]
    failures: list[HandlerFailure] = []
    seen = False  # whether some of the chunk's events were found in the inbox already
    while todo:
        try:
            failed = _apply_chunk(todo, consumer=consumer, fences=fences or {}, seen=seen)
        except _Seen:
            seen = True
            continue
        if failed is None:
            done |= {d.entry.id for d in todo}
            break
        failures.append(failed)
        todo = [d for d in todo if d is not failed.delivery]
    return done, failures


class ChunkSize:
    """How many deliveries the next chunk's transaction takes: as many as the last chunk's time per delivery
    fits in ``seconds`` (EVENTING_COMMIT_MS), at least one and at most ``most`` (EVENTING_COMMIT_EVERY).
    Each commit costs the same whatever it holds, so quick handlers commit a whole read batch at once; but
    on SQLite a transaction holds the database's single write lock, which every other writer (a web
    request placing an order) waits for, so slow handlers commit fewer at a time and no wait grows longer.
    It starts at one, as nothing is known of the handlers yet, and finds its size in two or three chunks."""

    def __init__(self, *, most: int, seconds: float) -> None:
        self.most = most
        self.seconds = seconds
        self.size = 1

    def took(self, deliveries: int, seconds: float) -> None:
        """The last chunk applied ``deliveries`` in ``seconds``."""
        if deliveries and seconds > 0:
            self.size = max(1, min(self.most, int(self.seconds * deliveries / seconds)))


class _HandlerFailed(Exception):
    """Rolls the chunk's transaction back; carries the failure to set aside."""

    def __init__(self, failure: HandlerFailure) -> None:
        super().__init__(str(failure.error))
        self.failure = failure


class _Seen(Exception):
    """Some of the chunk's inbox rows were there already (a redelivery): the transaction rolls back, and the
    chunk is applied again with the statement that says which events are new."""


def _apply_chunk(
    todo: list[Delivery], *, consumer: str, fences: Mapping[str, int], seen: bool
) -> HandlerFailure | None:
    """One transaction for the whole chunk; the first handler failure, or None when all committed."""
    timings = Timings(consumer)
    try:
        with transaction.atomic():
            if fences:  # with leases
                for partition in sorted({base_stream(d.entry.stream) for d in todo} & set(fences)):
                    fence(group=consumer, stream=partition, token=fences[partition])
            if seen or not _inbox_insert_all(todo, consumer=consumer):
                new = _inbox_insert(todo, consumer=consumer)
                # The first delivery of a new event is applied; any other (a duplicate entry) is skipped.
                firsts = {d.envelope.id: d for d in reversed(todo)}
                fresh = [d for d in todo if d.envelope.id in new and firsts[d.envelope.id] is d]
            else:
                fresh = todo
            _run_handlers(fresh, consumer=consumer, timings=timings)
    except _HandlerFailed as failed:
        return failed.failure
    except TRANSIENT_ERRORS as exc:
        raise TransientFailure(str(exc)) from exc
    finally:
        timings.observe()
    if len(fresh) < len(todo):
        applied = {id(d) for d in fresh}
        _log_duplicates([d for d in todo if id(d) not in applied], consumer=consumer)
    return None


def event_span(delivery: Delivery, *, consumer: str) -> Any:
    """The tracing span of one event's processing by ``consumer``, a child of the span that raised it."""
    envelope = delivery.envelope
    parent = {"traceparent": envelope.traceparent} if envelope.traceparent else {}
    if parent and envelope.tracestate:
        parent["tracestate"] = envelope.tracestate
    return tracing.consumer_span(
        parent=parent,
        stream=delivery.entry.stream,
        group=consumer,
        message_id=delivery.entry.id,
        event_type=envelope.type,
        event_id=envelope.id,
    )


class Timings:
    """The handlers' time per event (HANDLER_SECONDS), gathered during a batch or a chunk and observed at its
    end: the labelled series is looked up once per event type, not once per event."""

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        self.by_type: dict[str, list[float]] = {}
        self._last = time.perf_counter()

    def start(self) -> None:
        """Start the clock of ``lap``: one reading per event, each event's time from the end of the one before."""
        self._last = time.perf_counter()

    def lap(self, event_type: str | None) -> None:
        """The time since the last lap (or ``start``) went to an event of ``event_type``; None: to one that
        failed, whose time is not counted."""
        now = time.perf_counter()
        if event_type is not None:
            self.add_one(event_type, now - self._last)
        self._last = now

    def add(self, deliveries: list[Delivery], seconds: float) -> None:
        """The handlers' time, shared by the events it was spent on."""
        share = seconds / len(deliveries)
        for delivery in deliveries:
            self.add_one(delivery.envelope.type, share)

    def add_one(self, event_type: str, seconds: float) -> None:
        self.by_type.setdefault(event_type, []).append(seconds)

    def observe(self) -> None:
        for event_type, shares in self.by_type.items():
            observe_each(HANDLER_SECONDS.labels(self.consumer, event_type), shares)
        self.by_type = {}


# What stands for an event's span with tracing off (a nullcontext does nothing, so one serves every event).
_NO_SPAN = nullcontext()


def _run_handlers(deliveries: list[Delivery], *, consumer: str, timings: Timings) -> None:
    """Run the deliveries' relational handlers, in the chunk's transaction, timing each (``Timings.lap``)."""
    traced = tracing.enabled()
    timings.start()
    for delivery in deliveries:
        envelope = delivery.envelope
        with (
            context.bind(correlation_id=envelope.correlation_id, causation_id=envelope.id),
            event_span(delivery, consumer=consumer) if traced else _NO_SPAN,
        ):
            for handler in delivery.handlers:
                if handler.idempotent:
                    continue
                try:
                    cast(HandlerFunc, handler.func)(delivery.event, envelope)
                except TRANSIENT_ERRORS:
                    raise
                except Exception as exc:  # noqa: BLE001 - any handler bug is counted and retried, then dead-lettered
                    raise _HandlerFailed(HandlerFailure(delivery, handler, exc, tb.format_exc())) from exc
        timings.lap(envelope.type)


def _inbox_insert_all(deliveries: list[Delivery], *, consumer: str) -> bool:
    """On SQLite, insert the deliveries' inbox rows, skipping those already there, without RETURNING; whether
    every row was new (the statements' row counts say so), the common case. On SQLite that costs half the
    statement with RETURNING (8 against 15 us per row, in chunks of 100 here), and a multi-row statement two
    thirds of an executemany of one row each (1.3 against 1.9 us per row, 100 rows). False elsewhere,
    inserting nothing: PostgreSQL's one multi-row statement is a single round trip."""
    connection = transaction.get_connection()
    if connection.vendor != "sqlite":
        return False
    ids = [_uuid_hex(d.envelope.id) for d in deliveries]
    inserted = 0
    with connection.cursor() as cursor:
        for sql, params in _inbox_statements(connection, consumer=consumer, event_ids=ids):
            cursor.execute(sql, params)
            inserted += cursor.rowcount
    if inserted < len(ids):  # some there already, or an event twice in the chunk
        raise _Seen()
    return True


def _inbox_insert(deliveries: list[Delivery], *, consumer: str) -> set[str]:
    """Insert the deliveries' inbox rows, skipping those already there; the event ids that were new.
    With RETURNING, on SQLite (3.35+) and PostgreSQL alike."""
    connection = transaction.get_connection()
    id_field = ProcessedEvent._meta.get_field("event_id")
    # Each event id as the column stores it, mapped back to the envelope's.
    if connection.features.has_native_uuid_field:
        stored = {id_field.get_db_prep_value(uuid.UUID(d.envelope.id), connection): d.envelope.id for d in deliveries}
    else:  # 32 hex digits (UUIDField.get_db_prep_value), written from the id without parsing it when it is canonical
        stored = {_uuid_hex(d.envelope.id): d.envelope.id for d in deliveries}
    new: set[str] = set()
    with connection.cursor() as cursor:
        for sql, params in _inbox_statements(
            connection, consumer=consumer, event_ids=list(stored), returning="RETURNING event_id"
        ):
            cursor.execute(sql, params)
            new |= {stored.get(row[0]) or str(uuid.UUID(str(row[0]))) for row in cursor.fetchall()}
    return new


def _inbox_statements(
    connection: Any, *, consumer: str, event_ids: list[Any], returning: str = ""
) -> Iterator[tuple[str, list[Any]]]:
    """The inbox's inserts of ``event_ids`` (each as its column stores it), skipping a row already there: one
    multi-row statement, or one per as many rows as the database takes parameters for (SQLite: 333)."""
    table = connection.ops.quote_name(ProcessedEvent._meta.db_table)
    now = ProcessedEvent._meta.get_field("processed_at").get_db_prep_value(timezone.now(), connection)
    most = max(1, (connection.features.max_query_params or 3 * len(event_ids)) // 3)
    for start in range(0, len(event_ids), most):
        part = event_ids[start : start + most]
        params: list[Any] = []
        for event_id in part:
            params += (consumer, event_id, now)
        values = ", ".join(["(%s, %s, %s)"] * len(part))
        sql = (
            f"INSERT INTO {table} (consumer, event_id, processed_at) VALUES {values} "  # noqa: S608 - names quoted, values bound
            f"ON CONFLICT (consumer, event_id) DO NOTHING {returning}"
        )
        yield sql, params


def _uuid_hex(event_id: str) -> str:
    return event_id.replace("-", "") if CANONICAL_UUID.fullmatch(event_id) else uuid.UUID(event_id).hex


def fence(*, group: str, stream: str, token: int) -> None:
    """Write ``token`` as the newest that has written for the group's partition, in the current transaction;
    LeaseLost when a newer token already has (this process's lease was taken over). One statement."""
    connection = transaction.get_connection()
    table = connection.ops.quote_name(ConsumerFence._meta.db_table)
    group_column = connection.ops.quote_name("group")
    sql = (
        f"INSERT INTO {table} ({group_column}, stream, token) VALUES (%s, %s, %s) "  # noqa: S608 - names quoted, values bound
        f"ON CONFLICT ({group_column}, stream) DO UPDATE SET token = excluded.token "
        f"WHERE {table}.token <= excluded.token RETURNING token"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [group, stream, token])
        if cursor.fetchone() is None:
            raise LeaseLost(
                f"{group} on {stream}: a newer lease than #{token} has written; this one is fenced off",
                partition=stream,
            )


def fence_tokens(*, group: str, streams: list[str]) -> dict[str, int]:
    """The newest token that has written for each of the group's partitions that has a fence: a new lease's token
    must be above it, even when Redis lost the partition's token counter (its master came back without its data)."""
    return dict(ConsumerFence.objects.filter(group=group, stream__in=streams).values_list("stream", "token"))


def _log_duplicates(deliveries: list[Delivery], *, consumer: str) -> None:
    for delivery in deliveries:
        envelope = delivery.envelope
        with context.bind(correlation_id=envelope.correlation_id, causation_id=envelope.id):
            logger.info("%s: %s %s already applied; skipping the duplicate", consumer, envelope.type, envelope.id)


def apply_idempotent(deliveries: list[Delivery], *, consumer: str) -> list[HandlerFailure]:
    """See ``_apply_idempotent``; with tracing on, each delivery's span covers all its handlers."""
    if not tracing.enabled():
        return _apply_idempotent(deliveries, consumer=consumer)
    with ExitStack() as spans:
        for delivery in deliveries:
            if any(handler.idempotent for handler in delivery.handlers):
                spans.enter_context(event_span(delivery, consumer=consumer))
        return _apply_idempotent(deliveries, consumer=consumer)


def _apply_idempotent(deliveries: list[Delivery], *, consumer: str) -> list[HandlerFailure]:
    """Run the deliveries' idempotent handlers, in registration order: a batch function once for all
    its deliveries, whatever their types (a projection registers one handler per event type, all with
    the same function: its batch folds every type's changes of a row into one write), any other handler
    once per delivery. A failing batch is redone delivery by delivery, so only the events that fail are
    reported (a delivery's later handlers are skipped once it failed)."""
    failed: dict[str, HandlerFailure] = {}
    # Deliveries of one event type share their list of handlers (decode_all): the lists, each once.
    routes = list({id(d.handlers): d.handlers for d in deliveries}.values())
    # Handlers grouped by what runs: a batch function, or a handler of its own.
    groups: dict[object, list[Handler]] = {}
    for route in routes:
        for h in route:
            if h.idempotent:
                group = groups.setdefault(h.func if h.batch else h, [])
                if not any(h is seen for seen in group):
                    group.append(h)
    timings = Timings(consumer)
    try:
        # Handlers that run last (Handler.runs_last) after the others, whichever type's route named them first.
        for group in sorted(groups.values(), key=lambda group: group[0].runs_last):
            # Each route's first handler of the group, if it has one.
            chosen = {id(route): next((h for h in group if any(h is r for r in route)), None) for route in routes}
            targets = [
                (d, handler)
                for d in deliveries
                if (handler := chosen[id(d.handlers)]) is not None and d.entry.id not in failed
            ]
            first = group[0]
            if first.batch and len(targets) > 1:
                try:
                    started = time.perf_counter()
                    cast(BatchHandlerFunc, first.func)([(d.event, d.envelope) for d, _h in targets])
                    timings.add([d for d, _h in targets], time.perf_counter() - started)
                    continue
                except TRANSIENT_ERRORS as exc:
                    raise TransientFailure(str(exc)) from exc
                except Exception:  # noqa: BLE001 - redone one by one below, where the failure is pinned to its event
                    logger.warning(
                        "%s failed on a batch of %d; applying its events one by one", first.name, len(targets)
                    )
            for failure in _run_idempotent(targets, timings=timings):
                failed[failure.delivery.entry.id] = failure
    finally:
        timings.observe()
    return list(failed.values())


def _run_idempotent(targets: list[tuple[Delivery, Handler]], *, timings: Timings) -> list[HandlerFailure]:
    """Run each delivery's handler on it alone, timing each (``Timings.lap``); the failures."""
    failures = []
    timings.start()
    for delivery, handler in targets:
        envelope = delivery.envelope
        failure = None
        with context.bind(correlation_id=envelope.correlation_id, causation_id=envelope.id):
            try:
                if handler.batch:
                    cast(BatchHandlerFunc, handler.func)([(delivery.event, envelope)])
                else:
                    cast(HandlerFunc, handler.func)(delivery.event, envelope)
            except TRANSIENT_ERRORS as exc:
                raise TransientFailure(str(exc)) from exc
            except Exception as exc:  # noqa: BLE001 - any handler bug is counted and retried, then dead-lettered
                failure = HandlerFailure(delivery, handler, exc, tb.format_exc())
        timings.lap(envelope.type if failure is None else None)
        if failure is not None:
            failures.append(failure)
    return failures


def record_dead_letter(
    *, entry: Entry, group: str, failure: Failure, envelope: Envelope | None, copy_id: str
) -> DeadLetter | None:
    """Record the dead letter. Idempotent per (group, stream, entry): a crash before the ack records it once.

    Every value is first made to fit its column (``_storable``), and an entry too large to keep in the
    table is kept only in the dead-letter stream (``copy_id``). When the database is unavailable this
    raises TransientFailure: the entry stays pending until it is back. When it refuses the record for any
    other reason, a minimal one is written instead: the reason, the entry and the error that refused the
    first. When it refuses that too, this returns None: the copy in the dead-letter stream is the record."""
    key = _storable(consumer_group=group, stream=entry.stream, entry_id=entry.id)
    size = sum(len(name) + len(value) for name, value in entry.fields.items())
    payload = DeadLetter.payload_of(entry.fields) if size <= largest_entry_kept() else ""
    message = failure.error_message
    if not payload and size:
        message += f"\n\nThe entry ({size} bytes) is too large for this record: it is kept in the dead-letter stream."
    same = {
        "reason": failure.reason,
        "attempts": failure.attempts,
        "first_failed_at": failure.first_failed_at,
        "last_failed_at": failure.last_failed_at,
    }
    full = {
        "event_id": envelope.id if envelope else "",
        "event_type": envelope.type if envelope else entry.fields.get(b"type", b"").decode(errors="replace"),
        "handler": failure.handler,
        "error_class": failure.error_class,
        "error_message": message,
        "traceback": failure.traceback,
        "payload": payload,
        "correlation_id": envelope.correlation_id if envelope else "",
        "dead_letter_entry_id": copy_id,
    }
    try:
        dead_letter, created = DeadLetter.objects.get_or_create(**key, defaults={**_storable(**full), **same})
    except TRANSIENT_ERRORS as exc:
        raise TransientFailure(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - whatever refused it, the entry is recorded in a simpler form below
        logger.exception(
            "%s: the dead letter of entry %s on %s was refused; recording a minimal one", group, entry.id, entry.stream
        )
        minimal = {
            "error_class": failure.error_class,
            "error_message": f"{message[:MINIMAL_MESSAGE_CHARS]}\n\n"
            f"Recorded without its details, which the database refused: {type(exc).__name__}: {exc}",
            "payload": payload,
            "dead_letter_entry_id": copy_id,
        }
        try:
            dead_letter, created = DeadLetter.objects.get_or_create(**key, defaults={**_storable(**minimal), **same})
        except TRANSIENT_ERRORS as again:
            raise TransientFailure(str(again)) from again
        except Exception:  # noqa: BLE001 - the copy in the dead-letter stream is its record; never crash-loop on it
            logger.critical(
                "%s: no dead letter could be recorded for entry %s on %s (%s); its dead-letter stream copy is %s",
                group,
                entry.id,
                entry.stream,
                failure.reason,
                copy_id or "missing too",
                exc_info=True,
            )
            return None
    if created:
        logger.error(
            "%s: dead-lettered %s %s (entry %s on %s) after %d attempt(s): %s: %s",
            group,
            dead_letter.event_type or "?",
            dead_letter.event_id or "-",
            entry.id,
            entry.stream,
            failure.attempts,
            failure.reason,
            dead_letter.error_message,
        )
    return dead_letter


# A minimal dead letter keeps this much of the error message: enough to read it.
MINIMAL_MESSAGE_CHARS = 2000


def largest_entry_kept() -> int:
    """The largest entry, in bytes, whose payload the table keeps: twice the largest one read. Its JSON is
    at most six times that (a control character is written \\u0001), so no entry's size can make the
    database refuse its dead letter (PostgreSQL and SQLite stop at 1 GB); larger ones are kept only in the
    dead-letter stream."""
    return 2 * int(settings.EVENTING_MAX_PAYLOAD_BYTES)


def _storable(**values: str) -> dict[str, str]:
    """Each value as its DeadLetter column takes it on any database: NUL written out (PostgreSQL refuses
    it in text), a lone surrogate (JSON can spell one; UTF-8 cannot) escaped, cut to the column's length."""
    fitted = {}
    for name, value in values.items():
        text = value.replace("\x00", "\\x00").encode(errors="backslashreplace").decode()
        field = DeadLetter._meta.get_field(name)
        limit = field.max_length if isinstance(field, models.Field) else None
        fitted[name] = text[:limit] if limit else text
    return fitted
