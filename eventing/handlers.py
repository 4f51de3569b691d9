import logging

from eventing.event_log import event_log_append
from eventing.events import Envelope, Event
from eventing.registry import ALL_EVENTS, handles

logger = logging.getLogger(__name__)


@handles("projections", ALL_EVENTS, idempotent=True)
def append_to_event_log(event: Event, envelope: Envelope) -> None:
    if not event_log_append(envelope=envelope):
        logger.info("%s %s is already in the event log; skipping the duplicate", envelope.type, envelope.id)
