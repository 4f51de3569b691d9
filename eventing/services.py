"""What an operator does to dead letters: retry one to its own consumer group, or discard it, audited."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from core.exceptions import InvalidInput
from eventing.models import DeadLetter, DeadLetterAction
from eventing.transport.client import get_redis
from eventing.transport.streams import retry_target


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
            elif not (fields := _retryable_fields(locked)):
                result = ActionResult(locked, False, _NOT_RETRYABLE.format(copy=locked.dead_letter_entry_id or "-"))
            else:
                target = retry_target(locked.stream, locked.consumer_group, fields)
                new_id = str(client.xadd(target, dict[Any, Any](fields)))
                locked.status = DeadLetter.Status.RETRIED
                locked.save(update_fields=["status", "updated_at"])
                result = ActionResult(locked, True, f"re-delivered to {locked.consumer_group} as {target} {new_id}")
            _audit(locked, kind=DeadLetterAction.Kind.RETRY, actor=actor, reason="", result=result.message, batch=batch)
        results.append(result)
    return results


_NOT_RETRYABLE = (
    "not retried: no stream entry is recorded to deliver again (its copy in the dead-letter stream is {copy})"
)


def _retryable_fields(dead_letter: DeadLetter) -> dict[bytes, bytes]:
    """The entry to deliver again, byte for byte as it was read (an undecodable one comes back to the
    dead letters); empty when the record holds none: a minimal dead letter without its payload, or an
    entry trimmed away before it was read."""
    try:
        return dead_letter.entry_fields()
    except ValueError:
        return {}


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
