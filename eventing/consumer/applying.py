"""The consumer's only database work: applying deliveries with the inbox, and recording dead letters.

Relational handlers of a chunk run in one transaction, each event in a
savepoint together with its inbox row (``ProcessedEvent``), so one commit covers
the chunk, a failing event rolls back alone, and a redelivered event is
recognised by its inbox row. Idempotent (MongoDB) handlers run outside it.
"""

from __future__ import annotations

import json
import logging
import traceback as tb
from dataclasses import dataclass

from django.db import transaction

from eventing.consumer.decoding import Delivery, Entry
from eventing.consumer.policy import TRANSIENT_ERRORS, Failure, Kind, TransientFailure, classify
from eventing.contract import context
from eventing.contract.consumers import Handler
from eventing.contract.envelope import Envelope
from eventing.models import DeadLetter, ProcessedEvent

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


def apply_transactional(chunk: list[Delivery], *, consumer: str) -> tuple[set[str], list[HandlerFailure]]:
    """Apply the relational handlers of a chunk in one transaction. Returns (entry ids done, failures);
    raises TransientFailure when a backing service fails, which rolls the whole chunk back."""
    done = {d.entry.id for d in chunk if not d.transactional}
    todo = [d for d in chunk if d.transactional]
    failures: list[HandlerFailure] = []
    if not todo:
        return done, failures
    with transaction.atomic():
        applied = {
            str(event_id)
            for event_id in ProcessedEvent.objects.filter(
                consumer=consumer, event_id__in=[d.envelope.id for d in todo]
            ).values_list("event_id", flat=True)
        }
        for delivery in todo:
            envelope = delivery.envelope
            with context.bind(correlation_id=envelope.correlation_id, causation_id=envelope.id):
                if envelope.id in applied:
                    logger.info(
                        "%s: %s %s already applied; skipping the duplicate", consumer, envelope.type, envelope.id
                    )
                    done.add(delivery.entry.id)
                    continue
                current: Handler | None = None
                try:
                    with transaction.atomic():
                        ProcessedEvent.objects.create(consumer=consumer, event_id=envelope.id)
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


def apply_idempotent(delivery: Delivery) -> HandlerFailure | None:
    """Run the delivery's idempotent handlers; the first failure, or None."""
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


def record_dead_letter(
    *, entry: Entry, group: str, failure: Failure, envelope: Envelope | None, copy_id: str
) -> DeadLetter:
    """Record the dead letter. Idempotent per (group, stream, entry): a crash before the ack records it once."""
    dead_letter, created = DeadLetter.objects.get_or_create(
        consumer_group=group,
        stream=entry.stream,
        entry_id=entry.id,
        defaults={
            "event_id": envelope.id if envelope else "",
            "event_type": envelope.type if envelope else entry.fields.get("type", "")[:100],
            "handler": failure.handler[:300],
            "reason": failure.reason,
            "attempts": failure.attempts,
            "first_failed_at": failure.first_failed_at,
            "last_failed_at": failure.last_failed_at,
            "error_class": failure.error_class[:300],
            "error_message": failure.error_message,
            "traceback": failure.traceback,
            "payload": json.dumps(entry.fields, sort_keys=True),
            "correlation_id": envelope.correlation_id[:128] if envelope else "",
            "dead_letter_entry_id": copy_id,
        },
    )
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
            failure.error_message,
        )
    return dead_letter
