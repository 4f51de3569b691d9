"""What an operator does to dead letters: retry one to its own consumer group, or discard it, audited."""

from __future__ import annotations

import difflib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from core.exceptions import InvalidInput
from eventing.contract.envelope import Envelope
from eventing.contract.errors import EventError, InvalidEvent
from eventing.contract.events import field_names
from eventing.contract.schemas import validate_event
from eventing.models import DeadLetter, DeadLetterAction
from eventing.transport.client import get_redis
from eventing.transport.streams import retry_target


@dataclass(frozen=True)
class ActionResult:
    dead_letter: DeadLetter
    done: bool
    message: str


def _audit(
    dead_letter: DeadLetter,
    *,
    kind: str,
    actor: str,
    reason: str,
    result: str,
    batch: uuid.UUID,
    original: str = "",
    diff: str = "",
) -> None:
    DeadLetterAction.objects.create(
        dead_letter=dead_letter,
        kind=kind,
        actor=actor,
        reason=reason,
        result=result,
        batch=batch,
        original=original,
        diff=diff,
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


def dead_letter_envelope_text(*, dead_letter: DeadLetter) -> str:
    """The failed event's envelope as indented JSON, the starting point of an edit; the entry's ``data``
    as it was read when it is not a readable envelope (an edit then writes one whole)."""
    data = _retryable_fields(dead_letter).get(b"data", b"")
    text = data.decode(errors="replace")
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except (ValueError, RecursionError):
        return text


def dead_letter_edit(*, dead_letter: DeadLetter, envelope: str, actor: str, reason: str) -> ActionResult:
    """Correct a pending dead letter's event and deliver the corrected one to its own consumer group.

    The edited envelope must be a valid envelope whose event fits its schema (InvalidInput otherwise, with
    nothing changed), and keep the event's id: it is how every consumer recognises the event. The audit
    trail keeps the original envelope, the edit as a unified diff, who made it and why."""
    if not reason.strip():
        raise InvalidInput({"reason": ["Say why the event needed correcting (kept in the audit trail)."]})
    try:
        edited = Envelope.from_json(envelope)
        event = edited.event()
        validate_event(event=event)
        undeclared = sorted(set(edited.data) - field_names(type(event))) if edited.version == event.VERSION else []
        if undeclared:  # a reader would ignore them: the operator meant something else
            raise InvalidEvent(f"{edited.type} declares no field {', '.join(map(repr, undeclared))}")
    except EventError as exc:
        raise InvalidInput({"envelope": [f"The edited envelope is not a valid event: {exc}"]}) from None
    with transaction.atomic():
        locked = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
        if locked.status != DeadLetter.Status.PENDING:
            raise InvalidInput({"envelope": [f"Not edited: the dead letter is already {locked.get_status_display()}."]})
        fields = _retryable_fields(locked)
        if locked.event_id and edited.id != locked.event_id:
            raise InvalidInput(
                {"envelope": [f"The event id must stay {locked.event_id}: consumers recognise it by it."]}
            )
        original = dead_letter_envelope_text(dead_letter=locked)
        corrected = json.dumps(json.loads(edited.to_json()), indent=2, sort_keys=True)
        diff = "".join(
            difflib.unified_diff(
                original.splitlines(keepends=True),
                corrected.splitlines(keepends=True),
                fromfile="original",
                tofile=f"edited by {actor}",
            )
        )
        if not diff:
            raise InvalidInput({"envelope": ["Nothing was changed; retry the dead letter instead."]})
        entry = {**fields, b"type": edited.type.encode(), b"data": edited.to_json().encode()}
        target = retry_target(locked.stream, locked.consumer_group, entry)
        new_id = str(get_redis().xadd(target, dict[Any, Any](entry)))
        locked.status = DeadLetter.Status.RETRIED
        locked.save(update_fields=["status", "updated_at"])
        result = ActionResult(
            locked, True, f"corrected and re-delivered to {locked.consumer_group} as {target} {new_id}"
        )
        _audit(
            locked,
            kind=DeadLetterAction.Kind.EDIT,
            actor=actor,
            reason=reason,
            result=result.message,
            batch=uuid.uuid4(),
            original=original,
            diff=diff,
        )
    return result
