"""Turning domain signals into outbox rows.

Each event-publishing app connects the signals of its ``signals.py`` to
:func:`record_event` in its ``AppConfig.ready()``, each with a ``dispatch_uid``
(see :func:`outbox_uid`). Services send them inside ``transaction.atomic``
with ``event=<Event>`` and ``aggregate_version=<int>``; the row is written in
the same transaction as the change, so an event exists exactly when its
change does.
"""

import logging
from typing import Any

from django.db import transaction

from core.inserts import insert
from eventing.contract.envelope import Envelope
from eventing.contract.errors import EventError
from eventing.contract.events import Event, event_class
from eventing.contract.schemas import validate_event
from eventing.models import OutboxEvent
from eventing.telemetry import tracing
from eventing.transport.relay import publish_after_commit
from eventing.transport.streams import stream_for

logger = logging.getLogger(__name__)


def record_event(sender: Any, *, event: Event, aggregate_version: int, **kwargs: Any) -> None:
    """Signal receiver: write the event to the outbox in the sender's transaction.

    An event that does not fit its schema raises InvalidEvent before any row is
    written, which rolls back the sender's change with it."""
    if not transaction.get_connection().in_atomic_block:
        raise EventError(f"{event.TYPE} was sent outside transaction.atomic; it would not commit with its change")
    if event_class(event.TYPE) is not type(event):
        raise EventError(f"{type(event).__name__} is not the registered class for {event.TYPE}")
    data = validate_event(event=event)
    # The trace context of the request or the consumer span raising it: its consumers continue that trace.
    envelope = Envelope.wrap(event, aggregate_version=aggregate_version, trace=tracing.trace_headers(), data=data)
    # Its aggregate's partition: all the events of one order, reservation or item in one stream, in order.
    stream = stream_for(envelope.aggregate_id)
    payload = envelope.to_json()
    # One INSERT sent as written (core.inserts): the ORM's create() cost 120-140 us of CPU a row here.
    [row] = insert(
        [
            OutboxEvent(
                event_id=envelope.id,
                event_type=envelope.type,
                stream=stream,
                payload=payload,
                occurred_at=envelope.occurred_at,
            )
        ]
    )
    logger.info("recorded %s %s for %s %s", envelope.type, envelope.id, envelope.aggregate_type, envelope.aggregate_id)
    publish_after_commit((row.pk, stream, envelope.type, payload, envelope.occurred_at.isoformat()))


def outbox_uid(signal_name: str) -> str:
    """The ``dispatch_uid`` of one domain signal's connection to the outbox (``"orders.order_created"``)."""
    return f"eventing.outbox:{signal_name}"
