from eventing.event_log import event_log_append
from eventing.events import Envelope, Event
from eventing.registry import ALL_EVENTS, handles


@handles("projections", ALL_EVENTS, idempotent=True)
def append_to_event_log(event: Event, envelope: Envelope) -> None:
    event_log_append(envelope=envelope)
