"""Turning domain signals into outbox rows.

Every ``Signal`` that an event-publishing app (one with both ``events.py`` and
``signals.py``) declares in its ``signals.py`` is connected here by
``EventingConfig.ready()``. Services send them inside ``transaction.atomic``
with ``event=<Event>`` and ``aggregate_version=<int>``; the row is written in
the same transaction as the change, so an event exists exactly when its
change does.
"""

import importlib
import importlib.util
import logging
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import transaction
from django.dispatch import Signal

from eventing.events import Envelope, Event, EventError, event_class
from eventing.models import OutboxEvent
from eventing.relay import publish_after_commit
from eventing.schemas import validate_event

logger = logging.getLogger(__name__)


def record_event(sender: Any, *, event: Event, aggregate_version: int, **kwargs: Any) -> None:
    """Signal receiver: write the event to the outbox in the sender's transaction.

    An event that does not fit its schema raises InvalidEvent before any row is
    written, which rolls back the sender's change with it."""
    if not transaction.get_connection().in_atomic_block:
        raise EventError(f"{event.TYPE} was sent outside transaction.atomic; it would not commit with its change")
    if event_class(event.TYPE) is not type(event):
        raise EventError(f"{type(event).__name__} is not the registered class for {event.TYPE}")
    validate_event(event=event)
    envelope = Envelope.wrap(event, aggregate_version=aggregate_version)
    row = OutboxEvent.objects.create(
        event_id=envelope.id,
        event_type=envelope.type,
        stream=settings.EVENTING_STREAM,
        payload=envelope.to_json(),
        occurred_at=envelope.occurred_at,
    )
    logger.info("recorded %s %s for %s %s", envelope.type, envelope.id, envelope.aggregate_type, envelope.aggregate_id)
    publish_after_commit(row)


def domain_signals() -> list[tuple[str, Signal]]:
    """(dispatch uid, signal) for every signal declared by an event-publishing app."""
    found = []
    for config in apps.get_app_configs():
        if importlib.util.find_spec(f"{config.name}.events") is None:
            continue
        try:
            module = importlib.import_module(f"{config.name}.signals")
        except ModuleNotFoundError as exc:
            if exc.name != f"{config.name}.signals":
                raise
            continue
        for name, value in vars(module).items():
            if isinstance(value, Signal):
                found.append((f"eventing.outbox:{config.name}.{name}", value))
    return found


def connect_domain_signals() -> None:
    for uid, signal in domain_signals():
        signal.connect(record_event, dispatch_uid=uid)
