"""The consumer runtime: one consumer group reading one stream.

It creates its group when missing, first re-reads the entries still pending
under its own name (delivered before a crash, never acked), then reads new
ones in batches. Each event goes to the handlers registered for this consumer
and its type; the entry is acked only after their effects are durable.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading

import redis
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, transaction
from pymongo.errors import AutoReconnect, ConnectionFailure, ExecutionTimeout, ServerSelectionTimeoutError

from eventing import context, registry
from eventing.events import Envelope, Event, EventError
from eventing.models import ProcessedEvent
from eventing.redis_client import get_redis
from eventing.relay import publishing_batch

logger = logging.getLogger(__name__)

Entry = tuple[str, dict[str, str]]

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
MAX_BACKOFF_SECONDS = 30.0


class TransientFailure(Exception):
    """Processing stopped because a backing service is unavailable."""


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One entry read by this consumer, decoded, with the handlers it goes to."""

    entry_id: str
    envelope: Envelope
    event: Event | None
    handlers: list[registry.Handler]

    @property
    def transactional(self) -> bool:
        return any(not handler.idempotent for handler in self.handlers)


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
        self.count = count or settings.EVENTING_READ_COUNT
        self.block_ms = block_ms if block_ms is not None else settings.EVENTING_BLOCK_MS
        self.commit_every = settings.EVENTING_COMMIT_EVERY
        self.consumer_id = consumer_id or f"{socket.gethostname()}-{os.getpid()}"
        # The socket must outlive the server-side BLOCK.
        self.redis = get_redis(socket_timeout=self.block_ms / 1000 + 10)
        self.processed = 0

    # -- Redis plumbing -------------------------------------------------------

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            logger.info("created consumer group %s on %s", self.group, self.stream)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, last_id: str, *, block: bool = True) -> list[Entry]:
        """Read entries after ``last_id`` ("0": own pending ones; ">": new ones, blocking up to BLOCK ms)."""
        try:
            response = self.redis.xreadgroup(
                self.group,
                self.consumer_id,
                {self.stream: last_id},
                count=self.count,
                block=self.block_ms if block and last_id == ">" else None,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            logger.warning("stream %s or group %s disappeared; recreating it", self.stream, self.group)
            self.ensure_group()
            return []
        if not response:
            return []
        _stream, entries = response[0]
        # A pending entry that was trimmed away comes back with no fields.
        return [(entry_id, fields or {}) for entry_id, fields in entries]

    # -- Processing -----------------------------------------------------------

    def _decode(self, entry_id: str, fields: dict[str, str]) -> Delivery | None:
        """The entry as work for this consumer; None when it must stay pending."""
        try:
            envelope = Envelope.from_json(fields.get("data", ""))
            handlers = registry.handlers_for(self.name, envelope.type)
            event = envelope.event() if handlers else None
        except EventError as exc:
            logger.error(
                "%s: entry %s on %s cannot be handled, left pending: %s", self.name, entry_id, self.stream, exc
            )
            return None
        envelope = dataclasses.replace(envelope, stream=self.stream, entry_id=entry_id)
        return Delivery(entry_id=entry_id, envelope=envelope, event=event, handlers=handlers)

    def _apply_transactional(self, work: list[Delivery]) -> set[str]:
        """Apply the relational handlers of a chunk in one transaction,
        each event in a savepoint with its inbox row, so one commit covers the
        chunk and a failing event rolls back alone. Returns the entry ids done."""
        done = {d.entry_id for d in work if not d.transactional}
        todo = [d for d in work if d.transactional]
        if not todo:
            return done
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
                        done.add(delivery.entry_id)
                        continue
                    try:
                        with transaction.atomic():
                            ProcessedEvent.objects.create(consumer=self.name, event_id=envelope.id)
                            for handler in delivery.handlers:
                                if not handler.idempotent:
                                    handler.func(delivery.event, envelope)
                    except TRANSIENT_ERRORS as exc:
                        raise TransientFailure(str(exc)) from exc
                    except Exception:  # noqa: BLE001 - a handler bug of any kind leaves its entry pending, logged
                        self._log_failure(delivery)
                        continue
                    applied.add(envelope.id)
                    done.add(delivery.entry_id)
        return done

    def _apply_idempotent(self, delivery: Delivery) -> bool:
        envelope = delivery.envelope
        with context.bind(correlation_id=envelope.correlation_id, causation_id=envelope.id):
            try:
                for handler in delivery.handlers:
                    if handler.idempotent:
                        handler.func(delivery.event, envelope)
            except TRANSIENT_ERRORS as exc:
                raise TransientFailure(str(exc)) from exc
            except Exception:  # noqa: BLE001 - a handler bug of any kind leaves its entry pending, logged
                self._log_failure(delivery)
                return False
        return True

    def _log_failure(self, delivery: Delivery) -> None:
        envelope = delivery.envelope
        logger.exception(
            "%s: handling %s %s (entry %s) failed; left pending",
            self.name,
            envelope.type,
            envelope.id,
            delivery.entry_id,
        )

    def process(self, entries: list[Entry]) -> int:
        """Handle a batch and ack what was applied. Returns how many were acked.

        The batch is applied in chunks of EVENTING_COMMIT_EVERY entries. In each,
        relational effects commit first (one transaction for the chunk), then
        the events they emitted are published, then idempotent (Mongo) handlers
        run, and only then are the entries acked. On a transient failure what
        already succeeded is acked, the rest stays pending, and
        TransientFailure propagates.
        """
        close_old_connections()
        work = [d for d in (self._decode(entry_id, fields) for entry_id, fields in entries) if d is not None]
        acked = 0
        for start in range(0, len(work), self.commit_every):
            chunk = work[start : start + self.commit_every]
            done: list[str] = []
            try:
                with publishing_batch():
                    applied = self._apply_transactional(chunk)
                for delivery in chunk:
                    if delivery.entry_id in applied and self._apply_idempotent(delivery):
                        done.append(delivery.entry_id)
            finally:
                if done:
                    self.redis.xack(self.stream, self.group, *done)
                    self.processed += len(done)
                    acked += len(done)
        return acked

    def drain_pending(self, stop: threading.Event) -> None:
        """Re-read this consumer's own pending entries, oldest first."""
        last_id = "0"
        while not stop.is_set():
            entries = self.read(last_id)
            if not entries:
                return
            logger.info("%s: re-processing %d pending entr(y/ies)", self.name, len(entries))
            self.process(entries)
            last_id = entries[-1][0]

    def run(self, *, stop: threading.Event, until_idle: bool = False) -> None:
        """Consume until ``stop`` is set; with ``until_idle``, also return once a read comes back empty."""
        backoff = 0.0
        logger.info("consumer %s (%s) reading %s", self.name, self.consumer_id, self.stream)
        while not stop.is_set():
            try:
                self.ensure_group()
                self.drain_pending(stop)
                while not stop.is_set():
                    entries = self.read(">", block=not until_idle)
                    if entries:
                        self.process(entries)
                    elif until_idle:
                        return
                    backoff = 0.0
            except (redis.ConnectionError, redis.TimeoutError, TransientFailure, DatabaseError) as exc:
                backoff = min(max(backoff * 2, 0.5), MAX_BACKOFF_SECONDS)
                logger.error("%s: %s: %s; retrying in %.1fs", self.name, type(exc).__name__, exc, backoff)
                stop.wait(backoff)
        logger.info("consumer %s stopped after %d event(s)", self.name, self.processed)

    def run_until_idle(self) -> None:
        """Handle pending and new entries, returning at the first empty read (tools and tests)."""
        self.run(stop=threading.Event(), until_idle=True)
