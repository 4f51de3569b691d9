"""Dead letters: recording them, and retrying or discarding them (admin and CLI)."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from django.db import transaction

from config.exceptions import InvalidInput
from eventing.models import DeadLetter, DeadLetterAction
from eventing.redis_client import get_redis
from eventing.streams import dead_letter_stream, retry_stream

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """Why and how often one delivery failed."""

    reason: str
    error_class: str
    error_message: str
    traceback: str
    handler: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime


def dead_letter_record(
    *,
    client: redis.Redis,
    stream: str,
    entry_id: str,
    fields: dict[str, str],
    group: str,
    failure: Failure,
    event_id: str = "",
    event_type: str = "",
    correlation_id: str = "",
) -> DeadLetter:
    """Copy the entry to the dead-letter stream and record it. Idempotent per
    (group, stream, entry): a crash before the caller acks records it once."""
    copy_id = client.xadd(
        dead_letter_stream(stream),
        {**fields, "dead_letter_group": group, "dead_letter_reason": failure.reason, "dead_letter_stream": stream},
    )
    dead_letter, created = DeadLetter.objects.get_or_create(
        consumer_group=group,
        stream=stream,
        entry_id=entry_id,
        defaults={
            "event_id": event_id,
            "event_type": event_type or fields.get("type", "")[:100],
            "handler": failure.handler[:300],
            "reason": failure.reason,
            "attempts": failure.attempts,
            "first_failed_at": failure.first_failed_at,
            "last_failed_at": failure.last_failed_at,
            "error_class": failure.error_class[:300],
            "error_message": failure.error_message,
            "traceback": failure.traceback,
            "payload": json.dumps(fields, sort_keys=True),
            "correlation_id": correlation_id[:128],
            "dead_letter_entry_id": copy_id,
        },
    )
    if created:
        logger.error(
            "%s: dead-lettered %s %s (entry %s on %s) after %d attempt(s): %s: %s",
            group,
            dead_letter.event_type or "?",
            event_id or "-",
            entry_id,
            stream,
            failure.attempts,
            failure.reason,
            failure.error_message,
        )
    return dead_letter


@dataclass(frozen=True)
class ActionResult:
    dead_letter: DeadLetter
    done: bool
    message: str


def _audit(dead_letter: DeadLetter, *, kind: str, actor: str, reason: str, result: str, batch: uuid.UUID) -> None:
    DeadLetterAction.objects.create(
        dead_letter=dead_letter, kind=kind, actor=actor, reason=reason, result=result, batch=batch
    )


def dead_letter_retry(*, dead_letters: Iterable[DeadLetter], actor: str) -> list[ActionResult]:
    """Deliver each pending dead letter again, to its own consumer group only."""
    batch, results = uuid.uuid4(), []
    client = get_redis()
    for dead_letter in dead_letters:
        with transaction.atomic():
            locked = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
            if locked.status != DeadLetter.Status.PENDING:
                result = ActionResult(locked, False, f"not retried: it is already {locked.get_status_display()}")
            else:
                fields = json.loads(locked.payload)
                target = retry_stream(locked.stream, locked.consumer_group)
                new_id = client.xadd(target, fields)
                locked.status = DeadLetter.Status.RETRIED
                locked.save(update_fields=["status", "updated_at"])
                result = ActionResult(locked, True, f"re-delivered to {locked.consumer_group} as {target} {new_id}")
            _audit(locked, kind=DeadLetterAction.Kind.RETRY, actor=actor, reason="", result=result.message, batch=batch)
        results.append(result)
    return results


def dead_letter_discard(*, dead_letters: Iterable[DeadLetter], actor: str, reason: str) -> list[ActionResult]:
    """Give up on each pending dead letter for good; the reason is required and audited."""
    if not reason.strip():
        raise InvalidInput({"reason": ["A reason is required to discard a dead letter."]})
    batch, results = uuid.uuid4(), []
    for dead_letter in dead_letters:
        with transaction.atomic():
            locked = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
            if locked.status != DeadLetter.Status.PENDING:
                result = ActionResult(locked, False, f"not discarded: it is already {locked.get_status_display()}")
            else:
                locked.status = DeadLetter.Status.DISCARDED
                locked.save(update_fields=["status", "updated_at"])
                result = ActionResult(locked, True, "discarded")
            _audit(
                locked,
                kind=DeadLetterAction.Kind.DISCARD,
                actor=actor,
                reason=reason,
                result=result.message,
                batch=batch,
            )
        results.append(result)
    return results


def dead_letter_filter(
    *,
    group: str | None = None,
    event_type: str | None = None,
    status: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    search: str | None = None,
) -> Any:
    """Dead letters, newest first, by the same filters the admin offers."""
    from django.db.models import Q

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


def dead_letter_actions(*, dead_letter: DeadLetter) -> Any:
    """Its audit trail, oldest first."""
    return dead_letter.actions.order_by("at", "id")


def dead_letter_payload_pretty(dead_letter: DeadLetter) -> str:
    """The entry's fields as indented JSON; an envelope in ``data`` is decoded and indented too,
    so it reads as one document. Anything that is not JSON is shown exactly as stored."""
    try:
        fields = json.loads(dead_letter.payload)
    except ValueError:
        return dead_letter.payload
    if isinstance(fields, dict) and isinstance(fields.get("data"), str):
        with contextlib.suppress(ValueError):  # undecodable data stays as it was read
            fields = {**fields, "data": json.loads(fields["data"])}
    return json.dumps(fields, indent=2, sort_keys=True, ensure_ascii=False)
