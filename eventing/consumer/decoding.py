"""Turning a stream entry into work for one consumer, or into the reason it can never be applied."""

from __future__ import annotations

import dataclasses

from django.conf import settings

from eventing.consumer.policy import Failure
from eventing.contract.consumers import Handler, handlers_for
from eventing.contract.envelope import Envelope, utcnow
from eventing.contract.errors import EventError, OversizeEvent, UndecodableEvent
from eventing.contract.events import Event, event_class


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
    handlers: list[Handler]

    @property
    def transactional(self) -> bool:
        return any(not handler.idempotent for handler in self.handlers)


@dataclasses.dataclass(frozen=True)
class Rejection:
    """An entry that can never be applied; the envelope when it could be read."""

    entry: Entry
    failure: Failure
    envelope: Envelope | None = None


def decode(entry: Entry, *, consumer: str) -> Delivery | Rejection:
    """The entry as work for ``consumer``, or why it can never be applied (decoded once, here)."""
    envelope: Envelope | None = None
    try:
        if "data" not in entry.fields:
            raise UndecodableEvent("the entry has no data field")
        size = len(entry.fields["data"].encode())
        if size > settings.EVENTING_MAX_PAYLOAD_BYTES:
            raise OversizeEvent(f"payload of {size} bytes is over the {settings.EVENTING_MAX_PAYLOAD_BYTES}-byte limit")
        envelope = Envelope.from_json(
            entry.fields["data"], stream=entry.stream, entry_id=entry.id, received_at=utcnow()
        )
        event_class(envelope.type)  # an unknown type is refused by every consumer
        handlers = handlers_for(consumer, envelope.type)
        event = envelope.event() if handlers else None
    except EventError as exc:
        return Rejection(entry, Failure.first_and_final(reason=exc.reason, error=exc, message=str(exc)), envelope)
    return Delivery(entry=entry, envelope=envelope, event=event, handlers=handlers)
