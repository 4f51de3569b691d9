"""The consumer runtime: one consumer group reading the bus's partitions, put together from its parts.

It creates its group when missing, first re-reads the entries still pending
under its own name (delivered before a crash, never acked), then reads new
ones in batches. Each event goes to the handlers registered for this consumer
and its type; the entry is acked only after their effects are durable.

The parts, one job each: ``group`` talks to Redis about one partition,
``partitions`` decides which partitions are read and how, ``decoding`` turns entries
into deliveries, ``applying`` does the database work, ``policy`` decides what
a failure means, ``health`` says what a health record is. This module only
sequences them. Entries idle longer than EVENTING_CLAIM_IDLE_MS under another
consumer of the group (a dead one) are claimed and processed here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback as tb
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol

import redis
from django.conf import settings
from django.db import close_old_connections, transaction
from redis import RedisError

from eventing.consumer.applying import (
    ChunkSize,
    HandlerFailure,
    apply_idempotent,
    apply_transactional,
    fence,
    record_dead_letter,
)
from eventing.consumer.decoding import Delivery, Entry, Rejection, decode, decode_all
from eventing.consumer.group import ConsumerError, GroupIO, PendingRetry
from eventing.consumer.health import HEALTH_TTL_SECONDS, HealthRecord
from eventing.consumer.partitions import Partitions
from eventing.consumer.policy import TRANSIENT_ERRORS, Failure, Next, RetryPolicy, TransientFailure
from eventing.contract import context
from eventing.contract.consumers import consumer_names, declared_consumers
from eventing.contract.envelope import Envelope
from eventing.telemetry.metrics import (
    EVENTS_DEAD_LETTERED,
    EVENTS_FAILED,
    EVENTS_PROCESSED,
    EVENTS_RETRIED,
    event_type_label,
)
from eventing.transport.client import (
    CREDENTIAL_ERRORS,
    REDIS_ERRORS,
    SERVER_DOWN_ERRORS,
    credentials_refused,
    redact_url,
)
from eventing.transport.leases import LeaseLost
from eventing.transport.relay import publishing_batch

logger = logging.getLogger(__name__)

# What makes the loop back off and try again: a backing service that is unavailable.
RETRY_LOOP_ERRORS: tuple[type[BaseException], ...] = (TransientFailure, *TRANSIENT_ERRORS)
# What the loop handles itself rather than pin on an entry: an outage, or a lease that moved on.
LEASE_OR_RETRY_ERRORS: tuple[type[BaseException], ...] = (LeaseLost, *RETRY_LOOP_ERRORS)
# What makes taking over one partition fail without stopping the others: fenced off, or its master gone.
TAKEOVER_ERRORS: tuple[type[Exception], ...] = (LeaseLost, *SERVER_DOWN_ERRORS)

# How long the loop pauses after finding a lease lost before it takes stock again: a lease lost again at once
# (say its fence keeps refusing) costs a few rounds a second, not a busy loop; a tenth of a TTL or less.
LEASE_LOST_PAUSE_SECONDS = 0.1

__all__ = ["ConsumerError", "StreamConsumer"]


class HistorySource(Protocol):
    """Batches of (stream, entry id, entry fields) of every event a new group will not read from the
    partitions: those read from a partition below its boundary, and those of streams that are no partition
    now (retired by a repartitioning), oldest first (the event log's ``logged_before``)."""

    def __call__(
        self, *, boundaries: Mapping[str, str], batch_size: int
    ) -> Iterable[list[tuple[str, str, dict[str, str]]]]: ...


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
        if name not in consumer_names():
            raise ValueError(f"unknown consumer {name!r}; known: {', '.join(consumer_names())}")
        self.name = name
        self.group = name
        self.policy = RetryPolicy.for_consumer(name)
        declared = declared_consumers().get(name)
        linger_ms = settings.EVENTING_LINGER_MS_BY_CONSUMER.get(name, declared.linger_ms if declared else 0)
        self.linger = max(linger_ms, 0) / 1000
        self.chunks = ChunkSize(most=settings.EVENTING_COMMIT_EVERY, seconds=settings.EVENTING_COMMIT_MS / 1000)
        self.claim_idle_ms = settings.EVENTING_CLAIM_IDLE_MS
        self.partitions = Partitions(
            stream=stream or settings.EVENTING_STREAM,
            partitions=settings.EVENTING_PARTITIONS,
            group=self.group,
            consumer_id=consumer_id or f"{socket.gethostname()}-{os.getpid()}",
            count=count or settings.EVENTING_READ_COUNT,
            block_ms=block_ms if block_ms is not None else settings.EVENTING_BLOCK_MS,
        )
        self.stream = self.partitions.stream
        self.consumer_id = self.partitions.consumer_id
        self.processed = 0
        self.dead_lettered = 0
        # Entries of the last batch neither applied nor dead-lettered (they wait for a retry).
        self.unfinished: list[Entry] = []
        self.ready = False
        self._next_claim = 0.0
        self._next_health = 0.0
        # Whether this consumer may hold failed entries waiting for a retry: only then is the
        # failure record read, so a healthy batch costs Redis one round trip (its ack goes with the next
        # read, ``Partitions.ack``), and only then does the ack forget failure counts: an entry that never
        # failed has none, and forgetting a batch's was over 40% of its ack (1.5 of 3.4 us per event here,
        # mostly in building the HDEL command).
        self._may_hold_failures = True

    @property
    def streams(self) -> list[str]:
        """The streams this process reads now (with leases, those of the partitions it holds)."""
        return self.partitions.streams

    def ensure_group(self) -> None:
        self.partitions.ensure_groups()

    def rebalance(self, *, force: bool = False) -> int:
        """With leases: renew them and take this process's share of the partitions. A partition newly taken
        is fenced first (its new token written, so its previous owner can commit nothing more), then every
        entry its previous owner left pending is taken over and applied, before any new one is read: the
        partition's events stay in order. Returns the entries taken over."""
        return sum(self._take_over(io, token) for io, token in self.partitions.rebalance(force=force))

    def _take_over(self, io: GroupIO, token: int) -> int:
        """Fence a partition newly taken and apply what its previous owner left pending; returns how many.
        Any failure but those caught here (the database's, say) propagates to the loop, which retries: the
        partition is not taken over until this returns, so the retry's rebalance, which comes before any
        read, hands it back to be taken over first."""
        handled = 0
        try:
            with transaction.atomic():
                fence(group=self.group, stream=io.stream, token=token)
            for claimed in io.claim_idle(0):
                self._may_hold_failures = True
                handled += self.process(claimed)
            self.partitions.taken_over(io.stream, token)
        except TAKEOVER_ERRORS as exc:
            # Fenced off, or its master went away half-way: nothing new is read from it before a later
            # rebalance takes it again and takes over what is pending on it first. The other partitions go on.
            logger.warning("%s: taking over %s failed (%s: %s); retrying later", self.name, io.stream,
                           type(exc).__name__, exc)  # fmt: skip
            self.partitions.forget(io.stream)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Its stream or group is gone (its master came back without its data): nothing is pending on it.
            logger.warning("stream %s or group %s disappeared; recreating it", io.stream, self.group)
            io.ensure_group()
            self.partitions.taken_over(io.stream, token)
        return handled

    def read(self, last_id: str | dict[str, str], *, block: bool = True) -> list[Entry]:
        self.rebalance()  # with leases, read only what is still this process's (a no-op until it is due)
        return self.partitions.read(last_id, block=block)

    def read_new(self, *, block: bool, stop: threading.Event) -> list[Entry]:
        """New entries. When blocking (the live loop), a consumer with a linger (``Consumer.linger_ms``) first
        takes the entries already waiting, as they are: it is behind, and they came while it applied the last
        batch, so waiting would only delay them. Only when it had to wait for the first entry, and the read
        came short of the read count, does it wait its linger and read again without blocking, so the batch
        holds what came meanwhile: up to twice the read count in all."""
        if not (block and self.linger):
            return self.read(">", block=block)
        self.rebalance()
        entries, waited = self.partitions.read_new()
        if waited and entries and len(entries) < self.partitions.count and not stop.wait(self.linger):
            entries += self.read(">", block=False)
        return entries

    # Processing a batch.

    def process(self, entries: list[Entry], *, ack: bool = True, ack_with_next_read: bool = False) -> int:
        """Handle a batch and ack what was applied or dead-lettered. Returns how many were acked
        (with ``ack=False``: how many would have been; with ``ack_with_next_read``, the live loop's: how many
        are acked, in the round trip of the next read when none of them failed, ``Partitions.ack``).

        Relational effects commit in chunks (one transaction each; ``ChunkSize`` says how many entries),
        and the events a chunk emitted are published right after its commit. Then the
        idempotent (Mongo) handlers run once for the whole batch, so a projection reads and writes
        each row once per batch. Only then are the entries acked, in one round trip (the live loop's in the
        next read's, when none failed). On a transient
        failure nothing more is acked: what was committed is recognised by the inbox when the
        entries come again, and TransientFailure propagates.

        Any other error escaping the batch (a handler's are caught and counted per event) must not stop
        the consumer, nor come back with the batch for ever: it is logged with its traceback and the
        batch's unfinished entries are processed again one at a time (``_process_alone``).
        """
        try:
            done = self._process(entries, ack=ack, with_next_read=ack_with_next_read)
            self.partitions.renew_if_due()
            return done
        except LEASE_OR_RETRY_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - pinned to its entry below, counted and, in the end, dead-lettered
            logger.exception(
                "%s: a batch of %d entr(y/ies) failed outside the handlers; processing them one at a time",
                self.name,
                len(entries),
            )
        done = len(entries) - len(self.unfinished)
        left, unfinished = self.unfinished, list[Entry]()
        for index, entry in enumerate(left):
            try:
                done += self._process_alone(entry, ack=ack)
            except LEASE_OR_RETRY_ERRORS:
                self.unfinished = unfinished + left[index:]
                raise
            unfinished += self.unfinished
        self.unfinished = unfinished
        return done

    def _process_alone(self, entry: Entry, *, ack: bool) -> int:
        """Process one entry; should it fail outside the handlers, count that as a failure of its event
        (retried with backoff, dead-lettered after the last attempt) and leave it unfinished until then."""
        try:
            return self._process([entry], ack=ack)
        except LEASE_OR_RETRY_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - counted like a handler's failure, with the traceback
            trace = tb.format_exc()
            decoded = decode(entry, consumer=self.name)
            if isinstance(decoded, Rejection):
                raise  # dead-lettering it failed, which no retry of the entry mends
            if self._fail(HandlerFailure(decoded, None, exc, trace)) is not Next.DEAD_LETTER:
                return 0
        self.partitions.ack([entry] if ack else [])
        self.processed += 1
        self.unfinished = []
        return 1

    def _process(self, entries: list[Entry], *, ack: bool, with_next_read: bool = False) -> int:
        close_old_connections()
        work: list[Delivery] = []
        finished: list[Entry] = []
        try:
            for entry, decoded in zip(entries, decode_all(entries, consumer=self.name), strict=True):
                if isinstance(decoded, Rejection):
                    self._dead_letter(entry, decoded.failure, decoded.envelope)
                    finished.append(entry)
                else:
                    work.append(decoded)
            committed: list[Delivery] = []
            failures: list[HandlerFailure] = []
            if any(d.transactional for d in work):
                # With leases: this process's tokens for the batch's partitions; LeaseLost if one moved on.
                fences = self.partitions.fencing_tokens(entries)
                start = 0
                while start < len(work):
                    chunk = work[start : start + self.chunks.size]
                    with publishing_batch():
                        began = time.perf_counter()
                        applied, chunk_failures = apply_transactional(chunk, consumer=self.name, fences=fences)
                        self.chunks.took(len(chunk), time.perf_counter() - began)
                    committed += [d for d in chunk if d.entry.id in applied]
                    failures += chunk_failures
                    start += len(chunk)
            else:  # nothing to commit: the idempotent handlers alone
                committed = work
            failures += apply_idempotent(committed, consumer=self.name)
            failed = {f.delivery.entry.id for f in failures}
            applied_ok = [d for d in committed if d.entry.id not in failed]
            finished += [d.entry for d in applied_ok]
            # Events this consumer has handlers for; the others it only acks.
            for event_type, count in Counter(d.envelope.type for d in applied_ok if d.handlers).items():
                EVENTS_PROCESSED.labels(self.name, event_type).inc(count)
            for failure in failures:
                if self._fail(failure) is Next.DEAD_LETTER:
                    finished.append(failure.delivery.entry)
        finally:
            self.partitions.ack(
                finished if ack else [], forget_failures=self._may_hold_failures, with_next_read=with_next_read
            )
            self.processed += len(finished)
            done = {(e.stream, e.id) for e in finished}
            self.unfinished = [e for e in entries if (e.stream, e.id) not in done]
        return len(done)

    def _fail(self, failure: HandlerFailure) -> Next:
        """Count a handler's failure and dead-letter the event when the policy says so."""
        delivery, kind = failure.delivery, failure.kind
        self._may_hold_failures = True
        attempts, first_failed_at = self.partitions.io_of(delivery.entry.stream).count_failure(delivery.entry)
        envelope = delivery.envelope
        EVENTS_FAILED.labels(self.name, envelope.type, kind.value).inc()
        with context.bind(correlation_id=envelope.correlation_id, causation_id=envelope.id):
            logger.error(
                "%s: %s %s (entry %s) failed, attempt %d of %d: %s: %s",
                self.name,
                envelope.type,
                envelope.id,
                delivery.entry.id,
                attempts,
                self.policy.max_attempts,
                type(failure.error).__name__,
                failure.error,
                exc_info=failure.error if attempts == 1 else None,
            )
        step = self.policy.next_step(kind=kind, attempts=attempts)
        if step is Next.DEAD_LETTER:
            counted = Failure(
                reason=self.policy.reason(kind),
                error_class=f"{type(failure.error).__module__}.{type(failure.error).__qualname__}",
                error_message=str(failure.error),
                traceback=failure.traceback,
                handler=failure.handler.name if failure.handler else "",
                attempts=attempts,
                first_failed_at=first_failed_at,
                last_failed_at=datetime.now(UTC),
            )
            self._dead_letter(delivery.entry, counted, envelope)
        return step

    def _dead_letter(self, entry: Entry, failure: Failure, envelope: Envelope | None) -> None:
        """Copy the entry to the dead-letter stream and record it; the entry may be acked once either is kept."""
        copy_id = self.partitions.io_of(entry.stream).copy_to_dead_letters(entry, failure)
        label = event_type_label(envelope.type if envelope else None)  # a hostile entry's type is no label
        EVENTS_DEAD_LETTERED.labels(self.name, label, failure.reason).inc()
        recorded = record_dead_letter(
            entry=entry, group=self.group, failure=failure, envelope=envelope, copy_id=copy_id
        )
        if recorded is None and not copy_id:
            raise TransientFailure(
                f"entry {entry.id} of {entry.stream} could be dead-lettered neither in Redis nor in the database"
            )
        self.dead_lettered += 1

    # Retries and reclaiming.

    def retry_due(self) -> int:
        """Re-deliver to itself the failed entries whose backoff has passed."""
        handled = 0
        due: dict[str, list[str]] = {}
        if not self._may_hold_failures:
            return 0
        retries = self._pending_retries()
        # A partition set aside may hold failed entries too: look again once it answers.
        self._may_hold_failures = bool(retries) or bool(self.partitions.unavailable())
        for retry in retries:
            if retry.wait_ms <= 0:
                due.setdefault(retry.stream, []).append(retry.id)
        for stream, ids in due.items():
            claimed = self.partitions.io_of(stream).claim(stream, ids)
            for entry in claimed:
                event_type = entry.fields.get(b"type", b"").decode(errors="replace")
                EVENTS_RETRIED.labels(self.name, event_type_label(event_type)).inc()
            handled += self.process(claimed)
        return handled

    def next_retry_in(self) -> float | None:
        """Seconds until the soonest of this consumer's failed entries is due again; None when none waits."""
        waits = [retry.wait_ms for retry in self._pending_retries()]
        return max(min(waits), 0.0) / 1000 if waits else None

    def _pending_retries(self) -> list[PendingRetry]:
        found = self.partitions.each(lambda io: io.pending_retries(self.policy.backoff_ms))
        return [retry for retries in found for retry in retries]

    def claim_stale(self) -> int:
        """Take over entries another consumer of the group has left idle for too
        long (it died), then forget consumers that hold nothing any more."""
        handled = 0
        for claimed in self.partitions.claim_idle(self.claim_idle_ms):
            self._may_hold_failures = True  # a dead consumer's failed entries come with their counts
            logger.warning(
                "%s: claimed %d entr(y/ies) idle for over %d ms", self.name, len(claimed), self.claim_idle_ms
            )
            handled += self.process(claimed)
        for removed in self.partitions.forget_idle_consumers(self.claim_idle_ms):
            logger.info("%s: removed idle consumer %s", self.name, removed)
        return handled

    # Health.

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Publish readiness: at once when it changes, else every third of the record's lifetime."""
        changed = ready != self.ready
        self.ready = ready
        if not changed and time.monotonic() < self._next_health:
            return
        self._next_health = time.monotonic() + HEALTH_TTL_SECONDS / 3
        self.partitions.write_health(
            HealthRecord(ready=ready, reason=reason, at=datetime.now(UTC).isoformat(), processed=self.processed)
        )

    # The loop.

    def catch_up_from_log(self, stop: threading.Event, *, history: HistorySource) -> int:
        """Start a new group with the whole history: create it on every partition
        at the oldest entry the partition still holds, then apply every event
        trimmed before that, and every event of a stream retired by a
        repartitioning, from ``history`` (the MongoDB event log's
        ``logged_before``). The group reads the partitions from there on, so there
        is no gap and nothing is applied twice. Returns how many came from the history."""
        boundaries = self.partitions.create_groups_below_history()
        below = ", ".join(f"{stream} below {boundary}" for stream, boundary in boundaries.items())
        logger.info("%s: catching up from the event log: %s, and retired streams", self.name, below)
        done = 0
        for batch in history(boundaries=boundaries, batch_size=self.partitions.count):
            if stop.is_set():
                break
            entries = [
                Entry(stream, entry_id, {name.encode(): value.encode() for name, value in fields.items()})
                for stream, entry_id, fields in batch
            ]
            for _ in range(self.policy.max_attempts):
                self.process(entries, ack=False)
                if not self.unfinished:
                    break
                entries = self.unfinished
                time.sleep(self.policy.backoff_ms(1) / 1000)
            done += len(batch)
        logger.info(
            "%s: applied %d event(s) from the event log; now reading %s", self.name, done, ", ".join(self.streams)
        )
        return done

    def drain_pending(self, stop: threading.Event) -> None:
        """Re-read this consumer's own pending entries, oldest first, stream by stream (every partition)."""
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

    def run(self, *, stop: threading.Event, until_idle: bool = False, max_retry_wait: float = 60.0) -> None:
        """Consume until ``stop`` is set. With ``until_idle``, return once nothing is new and no
        failed entry waits for a retry: a retry still in its backoff is waited for, at most
        ``max_retry_wait`` seconds in all."""
        backoff = 0.0
        retry_deadline = time.monotonic() + max_retry_wait
        logger.info("consumer %s (%s) reading %s", self.name, self.consumer_id, ", ".join(self.streams))
        try:
            while not stop.is_set():
                try:
                    self.ensure_group()
                    self.rebalance(force=True)
                    self.drain_pending(stop)
                    self.set_ready(True)
                    backoff = 0.0
                    while not stop.is_set():
                        if time.monotonic() >= self._next_claim:
                            self._next_claim = time.monotonic() + settings.EVENTING_CLAIM_INTERVAL_MS / 1000
                            self.claim_stale()
                        retried = self.retry_due()
                        entries = self.read_new(block=not until_idle and not retried, stop=stop)
                        if entries:
                            self.process(entries, ack_with_next_read=True)
                        elif until_idle and not retried:
                            wait = self.next_retry_in()
                            if wait is None or time.monotonic() + wait > retry_deadline:
                                return
                            stop.wait(wait)
                        unavailable = self.partitions.not_answering()
                        self.set_ready(True, f"not answering: {', '.join(unavailable)}" if unavailable else "")
                except CREDENTIAL_ERRORS as exc:
                    raise ConsumerError(credentials_refused(exc)) from exc
                except LeaseLost as exc:
                    # Paused past its lease: nothing of that batch committed or was acked; its successor takes
                    # the entries over. The loop starts again: it takes stock of the leases and re-reads what
                    # is still this process's own before anything new.
                    logger.warning("%s: %s; rebalancing", self.name, exc)
                    self.partitions.forget(exc.partition)
                    stop.wait(LEASE_LOST_PAUSE_SECONDS)
                except RETRY_LOOP_ERRORS as exc:
                    backoff = min(max(backoff * 2, 0.5), settings.EVENTING_MAX_BACKOFF_SECONDS)
                    self.set_ready(False, f"{type(exc).__name__}: {exc}")
                    where = f" (Redis at {redact_url(settings.REDIS_URL)})" if isinstance(exc, RedisError) else ""
                    logger.error("%s: %s%s: %s; retrying in %.1fs", self.name, type(exc).__name__, where, exc, backoff)
                    stop.wait(backoff)
        finally:
            self._flush_acks()
            self.partitions.release()  # its partitions go to the others at once
            self.partitions.delete_health()
        logger.info("consumer %s stopped after %d event(s)", self.name, self.processed)

    def _flush_acks(self) -> None:
        """Send the last batch's acks, which wait for a next read that will not come."""
        try:
            self.partitions.flush_acks()
        except REDIS_ERRORS as exc:
            # They stay pending under this consumer: delivered again when it starts (or to another of its group
            # once idle long enough), and recognised by the inbox or an idempotent handler.
            logger.warning("%s: the last batch's acks were not sent (%s: %s)", self.name, type(exc).__name__, exc)

    def run_until_idle(self, *, max_retry_wait: float = 60.0) -> None:
        """Handle pending and new entries, and the retries they need, returning when nothing is left
        to do (tools and tests); a retry waits at most ``max_retry_wait`` seconds in all."""
        self.run(stop=threading.Event(), until_idle=True, max_retry_wait=max_retry_wait)
