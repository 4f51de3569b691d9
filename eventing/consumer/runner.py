"""The consumer runtime: one consumer group reading its stream.

It creates its group when missing, first re-reads the entries still pending
under its own name (delivered before a crash, never acked), then reads new
ones in batches. Each event goes to the handlers registered for this consumer
and its type; the entry is acked only after their effects are durable.

Failures:
- transient (the database, Redis or MongoDB unreachable or timing out): the
  entries stay pending, the consumer reports not-ready and backs off; these
  never count toward the dead-letter limit;
- permanent (undecodable, invalid, unknown type, newer version, oversize, or a
  handler's PermanentError): dead-lettered on the first delivery;
- anything else: retried with exponential backoff between deliveries, and
  dead-lettered after the consumer's max attempts.
Entries idle longer than EVENTING_CLAIM_IDLE_MS under another consumer of the
group (a dead one) are claimed and processed here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import traceback as tb
from collections import defaultdict
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, transaction
from pymongo.errors import AutoReconnect, ConnectionFailure, ExecutionTimeout, ServerSelectionTimeoutError

from eventing import context, registry
from eventing.dead_letters import Failure, dead_letter_record
from eventing.errors import PermanentError
from eventing.event_log import logged_before
from eventing.events import Envelope, Event, EventError, UndecodableEvent, event_class
from eventing.models import DeadLetter, ProcessedEvent
from eventing.redis_client import get_redis
from eventing.relay import publishing_batch
from eventing.streams import retry_stream

logger = logging.getLogger(__name__)

# Failures of the infrastructure rather than of the event: the event is not at
# fault, so it stays pending and the consumer backs off until the store is back.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionFailure,
    AutoReconnect,
    ServerSelectionTimeoutError,
    ExecutionTimeout,
)
# A health record older than this means the consumer is gone.
HEALTH_TTL_SECONDS = 30


class ConsumerError(Exception):
    """The consumer cannot do what it was asked (a usage error)."""


class TransientFailure(Exception):
    """Processing stopped because a backing service is unavailable."""


@dataclasses.dataclass(frozen=True)
class Entry:
    stream: str
    id: str
    fields: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One entry read by this consumer, decoded, with the handlers it goes to."""

    entry: Entry
    envelope: Envelope
    event: Event | None
    handlers: list[registry.Handler]

    @property
    def transactional(self) -> bool:
        return any(not handler.idempotent for handler in self.handlers)


@dataclasses.dataclass(frozen=True)
class Rejection:
    """An entry that can never be applied; the envelope when it could be read."""

    failure: Failure
    envelope: Envelope | None = None


@dataclasses.dataclass
class HandlerFailure:
    delivery: Delivery
    handler: registry.Handler | None
    error: BaseException
    traceback: str

    @property
    def permanent(self) -> bool:
        declared = self.handler.permanent if self.handler else ()
        return isinstance(self.error, (PermanentError, *declared))


def _now() -> datetime:
    return datetime.now(UTC)


class StreamConsumer:
    def __init__(
        self,
        *,
        name: str,
        stream: str | None = None,
        count: int | None = None,
        block_ms: int | None = None,
        consumer_id: str | None = None,
    ) -> None:
        if name not in registry.consumer_names():
            raise ValueError(f"unknown consumer {name!r}; known: {', '.join(registry.consumer_names())}")
        self.name = name
        self.group = name
        self.stream = stream or settings.EVENTING_STREAM
        self.streams = [self.stream, retry_stream(self.stream, self.group)]
        self.count = count or settings.EVENTING_READ_COUNT
        self.block_ms = block_ms if block_ms is not None else settings.EVENTING_BLOCK_MS
        self.commit_every = settings.EVENTING_COMMIT_EVERY
        self.max_attempts = settings.EVENTING_MAX_ATTEMPTS_BY_CONSUMER.get(name, settings.EVENTING_MAX_ATTEMPTS)
        self.claim_idle_ms = settings.EVENTING_CLAIM_IDLE_MS
        self.consumer_id = consumer_id or f"{socket.gethostname()}-{os.getpid()}"
        # The socket must outlive the server-side BLOCK.
        self.redis = get_redis(socket_timeout=self.block_ms / 1000 + 10)
        self.failures_key = f"eventing:failures:{self.stream}:{self.group}"
        self.health_key = f"eventing:health:{self.stream}:{self.group}:{self.consumer_id}"
        self.processed = 0
        self.dead_lettered = 0
        # Entries of the last batch neither applied nor dead-lettered (they wait for a retry).
        self.unfinished: list[Entry] = []
        self.ready = False
        self._next_claim = 0.0
        self._next_health = 0.0

    # -- Redis plumbing -------------------------------------------------------

    def ensure_group(self) -> None:
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
                logger.info("created consumer group %s on %s", self.group, stream)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(self, last_id: str | dict[str, str], *, block: bool = True) -> list[Entry]:
        """Read entries after ``last_id`` (per stream, or one id for every stream
        of this consumer): "0" for its own pending ones, ">" for new ones,
        blocking up to BLOCK ms."""
        ids = last_id if isinstance(last_id, dict) else dict.fromkeys(self.streams, last_id)
        try:
            response = self.redis.xreadgroup(
                self.group,
                self.consumer_id,
                ids,
                count=self.count,
                block=self.block_ms if block and ">" in ids.values() else None,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            logger.warning("stream %s or group %s disappeared; recreating it", self.stream, self.group)
            self.ensure_group()
            return []
        # A pending entry that was trimmed away comes back with no fields.
        return [
            Entry(stream, entry_id, fields or {}) for stream, entries in response or [] for entry_id, fields in entries
        ]

    def _ack(self, entries: list[Entry]) -> None:
        if not entries:
            return
        by_stream: dict[str, list[str]] = defaultdict(list)
        for entry in entries:
            by_stream[entry.stream].append(entry.id)
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        pipe.hdel(self.failures_key, *(f"{e.stream} {e.id}" for e in entries))
        pipe.execute()

    # -- Decoding -------------------------------------------------------------

    def _decode(self, entry: Entry) -> Delivery | Rejection:
        """The entry as work for this consumer, or why it can never be applied."""
        envelope: Envelope | None = None
        try:
            if "data" not in entry.fields:
                raise UndecodableEvent("the entry has no data field")
            size = len(entry.fields["data"].encode())
            if size > settings.EVENTING_MAX_PAYLOAD_BYTES:
                return Rejection(
                    self._permanent(
                        DeadLetter.Reason.OVERSIZE,
                        f"payload of {size} bytes is over the {settings.EVENTING_MAX_PAYLOAD_BYTES}-byte limit",
                    )
                )
            envelope = Envelope.from_json(entry.fields["data"])
            event_class(envelope.type)  # an unknown type is refused by every consumer
            handlers = registry.handlers_for(self.name, envelope.type)
            event = envelope.event() if handlers else None
        except EventError as exc:
            return Rejection(self._permanent(exc.reason, str(exc), error=exc), envelope)
        envelope = dataclasses.replace(envelope, stream=entry.stream, entry_id=entry.id)
        return Delivery(entry=entry, envelope=envelope, event=event, handlers=handlers)

    def _permanent(self, reason: str, message: str, *, error: BaseException | None = None) -> Failure:
        now = _now()
        return Failure(
            reason=reason,
            error_class=type(error).__name__ if error else "PayloadTooLarge",
            error_message=message,
            traceback="",
            handler="",
            attempts=1,
            first_failed_at=now,
            last_failed_at=now,
        )

    # -- Applying -------------------------------------------------------------

    def _apply_transactional(self, chunk: list[Delivery]) -> tuple[set[str], list[HandlerFailure]]:
        """Apply the relational handlers of a chunk in one transaction, each
        event in a savepoint with its inbox row, so one commit covers the chunk
        and a failing event rolls back alone. Returns (entry ids done, failures)."""
        done = {d.entry.id for d in chunk if not d.transactional}
        todo = [d for d in chunk if d.transactional]
        failures: list[HandlerFailure] = []
        if not todo:
            return done, failures
        with transaction.atomic():
            applied = {
                str(event_id)
                for event_id in ProcessedEvent.objects.filter(
                    consumer=self.name, event_id__in=[d.envelope.id for d in todo]
                ).values_list("event_id", flat=True)
            }
            for delivery in todo:
                envelope = delivery.envelope
                with context.bind(correlation_id=envelope.correlation_id, causation_id=envelope.id):
                    if envelope.id in applied:
                        logger.info(
                            "%s: %s %s already applied; skipping the duplicate", self.name, envelope.type, envelope.id
                        )
                        done.add(delivery.entry.id)
                        continue
                    current: registry.Handler | None = None
                    try:
                        with transaction.atomic():
                            ProcessedEvent.objects.create(consumer=self.name, event_id=envelope.id)
                            for handler in delivery.handlers:
                                if not handler.idempotent:
                                    current = handler
                                    handler.func(delivery.event, envelope)
                    except TRANSIENT_ERRORS as exc:
                        raise TransientFailure(str(exc)) from exc
                    except Exception as exc:  # noqa: BLE001 - any handler bug is counted and retried, then dead-lettered
                        failures.append(HandlerFailure(delivery, current, exc, tb.format_exc()))
                        continue
                    applied.add(envelope.id)
                    done.add(delivery.entry.id)
        return done, failures

    def _apply_idempotent(self, delivery: Delivery) -> HandlerFailure | None:
        envelope = delivery.envelope
        with context.bind(correlation_id=envelope.correlation_id, causation_id=envelope.id):
            for handler in delivery.handlers:
                if not handler.idempotent:
                    continue
                try:
                    handler.func(delivery.event, envelope)
                except TRANSIENT_ERRORS as exc:
                    raise TransientFailure(str(exc)) from exc
                except Exception as exc:  # noqa: BLE001 - any handler bug is counted and retried, then dead-lettered
                    return HandlerFailure(delivery, handler, exc, tb.format_exc())
        return None

    def _count_failure(self, failure: HandlerFailure) -> Failure:
        """Record one more failed attempt of the entry (in Redis, beside the stream)."""
        entry, envelope, now = failure.delivery.entry, failure.delivery.envelope, _now()
        field = f"{entry.stream} {entry.id}"
        previous = self.redis.hget(self.failures_key, field)
        record = json.loads(previous) if previous else {"count": 0, "first": now.isoformat()}
        record["count"] += 1
        self.redis.hset(self.failures_key, field, json.dumps(record))
        with context.bind(correlation_id=envelope.correlation_id, causation_id=envelope.id):
            logger.error(
                "%s: %s %s (entry %s) failed, attempt %d of %d: %s: %s",
                self.name,
                envelope.type,
                envelope.id,
                entry.id,
                record["count"],
                self.max_attempts,
                type(failure.error).__name__,
                failure.error,
                exc_info=failure.error if record["count"] == 1 else None,
            )
        return Failure(
            reason=DeadLetter.Reason.PERMANENT_ERROR if failure.permanent else DeadLetter.Reason.MAX_ATTEMPTS,
            error_class=f"{type(failure.error).__module__}.{type(failure.error).__qualname__}",
            error_message=str(failure.error),
            traceback=failure.traceback,
            handler=failure.handler.name if failure.handler else "",
            attempts=record["count"],
            first_failed_at=datetime.fromisoformat(record["first"]),
            last_failed_at=now,
        )

    def _dead_letter(self, entry: Entry, failure: Failure, envelope: Envelope | None = None) -> None:
        dead_letter_record(
            client=self.redis,
            stream=entry.stream,
            entry_id=entry.id,
            fields=entry.fields,
            group=self.group,
            failure=failure,
            event_id=envelope.id if envelope else "",
            event_type=envelope.type if envelope else "",
            correlation_id=envelope.correlation_id if envelope else "",
        )
        self.dead_lettered += 1

    def process(self, entries: list[Entry], *, ack: bool = True) -> int:
        """Handle a batch and ack what was applied or dead-lettered. Returns how many were acked.

        The batch is applied in chunks of EVENTING_COMMIT_EVERY entries. In each,
        relational effects commit first (one transaction for the chunk), then
        the events they emitted are published, then idempotent (Mongo) handlers
        run, and only then are the entries acked. On a transient failure what
        already succeeded is acked, the rest stays pending, and
        TransientFailure propagates.
        """
        close_old_connections()
        work: list[Delivery] = []
        finished: list[Entry] = []
        done: set[tuple[str, str]] = set()
        try:
            for entry in entries:
                decoded = self._decode(entry)
                if isinstance(decoded, Rejection):
                    self._dead_letter(entry, decoded.failure, decoded.envelope)
                    finished.append(entry)
                else:
                    work.append(decoded)
            for start in range(0, len(work), self.commit_every):
                chunk = work[start : start + self.commit_every]
                with publishing_batch():
                    applied, failures = self._apply_transactional(chunk)
                for delivery in chunk:
                    if delivery.entry.id not in applied:
                        continue
                    failure = self._apply_idempotent(delivery)
                    if failure is None:
                        finished.append(delivery.entry)
                    else:
                        failures.append(failure)
                for failure in failures:
                    counted = self._count_failure(failure)
                    if counted.reason == DeadLetter.Reason.PERMANENT_ERROR or counted.attempts >= self.max_attempts:
                        self._dead_letter(failure.delivery.entry, counted, failure.delivery.envelope)
                        finished.append(failure.delivery.entry)
                done |= {(e.stream, e.id) for e in finished}
                self._ack(finished if ack else [])
                self.processed += len(finished)
                finished = []
        finally:
            done |= {(e.stream, e.id) for e in finished}
            self._ack(finished if ack else [])
            self.processed += len(finished)
            self.unfinished = [e for e in entries if (e.stream, e.id) not in done]
        return len(entries)

    # -- Retries and reclaiming -----------------------------------------------

    def backoff_ms(self, attempts: int) -> float:
        return min(settings.EVENTING_RETRY_BASE_MS * 2 ** max(attempts - 1, 0), settings.EVENTING_RETRY_MAX_MS)

    def retry_due(self) -> int:
        """Re-deliver to itself the failed entries whose backoff has passed."""
        failures = self.redis.hgetall(self.failures_key)
        if not failures:
            return 0
        handled = 0
        for stream in self.streams:
            pending = self.redis.xpending_range(
                stream, self.group, min="-", max="+", count=self.count, consumername=self.consumer_id
            )
            due = [
                p["message_id"]
                for p in pending
                if (record := failures.get(f"{stream} {p['message_id']}"))
                and p["time_since_delivered"] >= self.backoff_ms(json.loads(record)["count"])
            ]
            if due:
                claimed = self.redis.xclaim(stream, self.group, self.consumer_id, min_idle_time=0, message_ids=due)
                handled += self.process([Entry(stream, entry_id, fields or {}) for entry_id, fields in claimed])
        return handled

    def claim_stale(self) -> int:
        """Take over entries another consumer of the group has left idle for too
        long (it died), then forget consumers that hold nothing any more."""
        handled = 0
        for stream in self.streams:
            cursor = "0-0"
            while True:
                cursor, claimed, _deleted = self.redis.xautoclaim(
                    stream,
                    self.group,
                    self.consumer_id,
                    min_idle_time=self.claim_idle_ms,
                    start_id=cursor,
                    count=self.count,
                )
                if claimed:
                    logger.warning(
                        "%s: claimed %d entr(y/ies) idle for over %d ms", self.name, len(claimed), self.claim_idle_ms
                    )
                    handled += self.process([Entry(stream, entry_id, fields or {}) for entry_id, fields in claimed])
                if cursor == "0-0":
                    break
            for consumer in self.redis.xinfo_consumers(stream, self.group):
                if (
                    consumer["name"] != self.consumer_id
                    and consumer["pending"] == 0
                    and consumer["idle"] > self.claim_idle_ms
                ):
                    self.redis.xgroup_delconsumer(stream, self.group, consumer["name"])
                    logger.info("%s: removed idle consumer %s from %s", self.name, consumer["name"], stream)
        return handled

    # -- Health ---------------------------------------------------------------

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Publish readiness (best effort: when Redis itself is down the record expires)."""
        changed = ready != self.ready
        self.ready = ready
        if not changed and time.monotonic() < self._next_health:
            return
        self._next_health = time.monotonic() + HEALTH_TTL_SECONDS / 3
        try:
            self.redis.set(
                self.health_key,
                json.dumps({"ready": ready, "reason": reason, "at": _now().isoformat(), "processed": self.processed}),
                ex=HEALTH_TTL_SECONDS,
            )
        except redis.RedisError:
            pass

    # -- Loop -----------------------------------------------------------------

    def catch_up_from_log(self, stop: threading.Event) -> int:
        """Start a new group with the whole history: create it at the oldest entry
        the stream still holds, then apply, from the MongoDB event log, every
        event trimmed before that. The group reads the stream from there on, so
        there is no gap and nothing is applied twice. Returns how many came from the log."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                raise ConsumerError(
                    f"consumer group {self.group} already exists on {self.stream} and has its own position; "
                    "--from-beginning is for a consumer that has never run"
                ) from None
            raise
        self.ensure_group()
        # Created first, so nothing the new group needs can be trimmed from here on.
        info = self.redis.xinfo_stream(self.stream)
        if info["first-entry"]:
            boundary = info["first-entry"][0]
        else:
            ms, seq = (int(part) for part in info["last-generated-id"].split("-"))
            boundary = f"{ms}-{seq + 1}"
        logger.info("%s: catching up from the event log on %s below %s", self.name, self.stream, boundary)
        done = 0
        for batch in logged_before(stream=self.stream, boundary=boundary, batch_size=self.count):
            if stop.is_set():
                break
            entries = [Entry(self.stream, entry_id, fields) for entry_id, fields in batch]
            for _ in range(self.max_attempts):
                self.process(entries, ack=False)
                if not self.unfinished:
                    break
                entries = self.unfinished
                time.sleep(self.backoff_ms(1) / 1000)
            done += len(batch)
        logger.info("%s: applied %d event(s) from the event log; now reading %s", self.name, done, self.stream)
        return done

    def drain_pending(self, stop: threading.Event) -> None:
        """Re-read this consumer's own pending entries, oldest first, stream by stream."""
        last_ids = dict.fromkeys(self.streams, "0")
        while last_ids and not stop.is_set():
            entries = self.read(last_ids)
            if entries:
                logger.info("%s: re-processing %d pending entr(y/ies)", self.name, len(entries))
                self.process(entries)
            for stream in list(last_ids):
                ids = [e.id for e in entries if e.stream == stream]
                if ids:
                    last_ids[stream] = ids[-1]
                else:
                    del last_ids[stream]  # nothing more pending there

    def run(self, *, stop: threading.Event, until_idle: bool = False) -> None:
        """Consume until ``stop`` is set; with ``until_idle``, also return once
        nothing is new and no retry is due."""
        backoff = 0.0
        logger.info("consumer %s (%s) reading %s", self.name, self.consumer_id, ", ".join(self.streams))
        while not stop.is_set():
            try:
                self.ensure_group()
                self.drain_pending(stop)
                self.set_ready(True)
                backoff = 0.0
                while not stop.is_set():
                    if time.monotonic() >= self._next_claim:
                        self._next_claim = time.monotonic() + settings.EVENTING_CLAIM_INTERVAL_MS / 1000
                        self.claim_stale()
                    retried = self.retry_due()
                    entries = self.read(">", block=not until_idle and not retried)
                    if entries:
                        self.process(entries)
                    elif until_idle and not retried:
                        return
                    self.set_ready(True)
            except (redis.ConnectionError, redis.TimeoutError, TransientFailure, DatabaseError) as exc:
                backoff = min(max(backoff * 2, 0.5), settings.EVENTING_MAX_BACKOFF_SECONDS)
                where = f" (Redis at {settings.REDIS_URL})" if isinstance(exc, redis.RedisError) else ""
                self.set_ready(False, f"{type(exc).__name__}: {exc}")
                logger.error("%s: %s%s: %s; retrying in %.1fs", self.name, type(exc).__name__, where, exc, backoff)
                stop.wait(backoff)
        try:
            self.redis.delete(self.health_key)  # gone, rather than not ready
        except redis.RedisError:
            pass
        logger.info("consumer %s stopped after %d event(s)", self.name, self.processed)

    def run_until_idle(self) -> None:
        """Handle pending and new entries, returning when nothing is left to do now (tools and tests)."""
        self.run(stop=threading.Event(), until_idle=True)
