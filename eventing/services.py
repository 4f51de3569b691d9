"""What an operator does to dead letters: retry one to its own consumer group, or discard it, audited."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction

from core.exceptions import InvalidInput
from eventing.models import DeadLetter, DeadLetterAction
from eventing.transport.client import get_redis
from eventing.transport.streams import retry_stream


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
                new_id = str(client.xadd(target, fields))
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
