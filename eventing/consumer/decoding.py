"""Turning a stream entry into work for one consumer, or into the reason it can never be applied.

An entry is whatever anyone XADDed: its fields are read as bytes (``group``), and this module is the
one place they are decoded. Anything that stops an entry from becoming an event (bytes that are not
UTF-8, JSON that is not an envelope, nesting too deep, a field over its limit, or an
error nobody foresaw) makes it a ``Rejection``, which the runner dead-letters with the raw bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from datetime import datetime
from typing import NamedTuple

from django.conf import settings

from eventing.consumer.policy import Failure
from eventing.contract.consumers import Handler, handlers_for
from eventing.contract.envelope import Envelope, utcnow
from eventing.contract.errors import DeadLetterReason, EventError, OversizeEvent, UndecodableEvent
from eventing.contract.events import Event, event_class

logger = logging.getLogger(__name__)

DATA = b"data"


# Entry and Delivery are named tuples, immutable as frozen dataclasses are and built in half the time: the
# consumer makes one of each per event.


class Entry(NamedTuple):
    """One stream entry as read: its fields are bytes, exactly as they were written."""

    stream: str
    id: str
    fields: dict[bytes, bytes]


class Delivery(NamedTuple):
    """One entry read by this consumer, decoded, with the handlers it goes to."""

    entry: Entry
    envelope: Envelope
    event: Event | None
    handlers: list[Handler]
    # Whether a handler runs in the inbox transaction (any that is not idempotent).
    transactional: bool


@dataclasses.dataclass(frozen=True)
class Rejection:
    """An entry that can never be applied; the envelope when it could be read."""

    entry: Entry
    failure: Failure
    envelope: Envelope | None = None


def decode(entry: Entry, *, consumer: str) -> Delivery | Rejection:
    """The entry as work for ``consumer``, or why it can never be applied (decoded once, here). Never raises."""
    return decode_all([entry], consumer=consumer)[0]


def decode_all(entries: list[Entry], *, consumer: str) -> list[Delivery | Rejection]:
    """``decode`` of each entry of a batch, received at one time: the deliveries of one event type share
    one list of handlers, looked up once per batch."""
    batch = _Batch(consumer=consumer, received_at=utcnow(), max_bytes=settings.EVENTING_MAX_PAYLOAD_BYTES)
    return [_decode(entry, batch) for entry in entries]


@dataclasses.dataclass
class _Batch:
    """What every entry of a batch is decoded with, and the routes of the event types met so far."""

    consumer: str
    received_at: datetime
    max_bytes: int
    routes: dict[str, tuple[list[Handler], bool]] = dataclasses.field(default_factory=dict)

    def route(self, event_type: str) -> tuple[list[Handler], bool]:
        """The consumer's handlers for the type, and whether one is transactional."""
        found = self.routes.get(event_type)
        if found is None:
            event_class(event_type)  # an unknown type is refused by every consumer
            handlers = handlers_for(self.consumer, event_type)
            found = self.routes[event_type] = (handlers, any(not handler.idempotent for handler in handlers))
        return found


def _decode(entry: Entry, batch: _Batch) -> Delivery | Rejection:
    consumer = batch.consumer
    envelope: Envelope | None = None
    try:
        data = entry.fields.get(DATA)
        if data is None:
            raise UndecodableEvent("the entry has no data field")
        size = sum(map(len, entry.fields)) + sum(map(len, entry.fields.values()))
        if size > batch.max_bytes:
            raise OversizeEvent(f"entry of {size} bytes is over the {batch.max_bytes}-byte limit")
        envelope = Envelope.from_json(data, stream=entry.stream, entry_id=entry.id, received_at=batch.received_at)
        handlers, transactional = batch.route(envelope.type)
        event = envelope.event(read_from_json=True) if handlers else None
    except EventError as exc:
        return Rejection(entry, Failure.first_and_final(reason=exc.reason, error=exc, message=str(exc)), envelope)
    except Exception as exc:  # noqa: BLE001 - whatever else an entry trips, it must not stop the consumer
        logger.exception(
            "%s: decoding entry %s of %s failed unexpectedly; dead-lettering it", consumer, entry.id, entry.stream
        )
        failure = Failure.first_and_final(
            reason=_reason(envelope), error=exc, message=str(exc), traceback=traceback.format_exc()
        )
        return Rejection(entry, failure, envelope)
    return Delivery(entry=entry, envelope=envelope, event=event, handlers=handlers, transactional=transactional)


def _reason(envelope: Envelope | None) -> DeadLetterReason:
    return DeadLetterReason.INVALID if envelope is not None else DeadLetterReason.UNDECODABLE
