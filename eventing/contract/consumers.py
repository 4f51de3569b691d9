"""Which consumer handles which event types, registered by decorator.

Each app's ``handlers.py`` registers its handlers::

    @handles("inventory", OrderCreated)
    def reserve_stock(event: OrderCreated, envelope: Envelope) -> None:
        stock_reserve(order_id=event.order_id, lines=event.lines)

A handler that raises ``eventing.errors.PermanentError``, or one of the
exception classes it lists in ``permanent=``, gets its event dead-lettered on
the first delivery; other errors are retried first.

A handler runs inside one database transaction together with the consumer's
inbox row, so its relational effect is applied once. A handler that writes
elsewhere (MongoDB) and is idempotent by construction says so with
``idempotent=True`` and runs outside that transaction. ``"*"`` as the event
type receives every event.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventing.events import Envelope, Event

ALL_EVENTS = "*"

HandlerFunc = Callable[[Any, Envelope], None]


@dataclass(frozen=True)
class Handler:
    consumer: str
    event_type: str
    func: HandlerFunc
    idempotent: bool
    # Errors that mean the event can never be applied: dead-lettered at once.
    permanent: tuple[type[BaseException], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"


class RegistryError(Exception):
    pass


_HANDLERS: dict[str, list[Handler]] = {}


def handles(
    consumer: str,
    *event_types: type[Event] | str,
    idempotent: bool = False,
    permanent: tuple[type[BaseException], ...] = (),
) -> Callable[[HandlerFunc], HandlerFunc]:
    if not event_types:
        raise RegistryError("handles() needs at least one event type")

    def decorator(func: HandlerFunc) -> HandlerFunc:
        for event_type in event_types:
            type_name = event_type if isinstance(event_type, str) else event_type.TYPE
            handler = Handler(
                consumer=consumer, event_type=type_name, func=func, idempotent=idempotent, permanent=permanent
            )
            registered = _HANDLERS.setdefault(consumer, [])
            if any(h.event_type == type_name and h.name == handler.name for h in registered):
                raise RegistryError(f"{handler.name} is registered twice for {consumer}/{type_name}")
            registered.append(handler)
        return func

    return decorator


def consumer_names() -> list[str]:
    return sorted(_HANDLERS)


def handlers_for(consumer: str, event_type: str) -> list[Handler]:
    return [h for h in _HANDLERS.get(consumer, []) if h.event_type in (event_type, ALL_EVENTS)]


def consumer_handlers(consumer: str) -> list[Handler]:
    return list(_HANDLERS.get(consumer, []))
