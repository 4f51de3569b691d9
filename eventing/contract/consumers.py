"""The consumers of the bus, declared once, and which handler each runs for which event type.

Every consumer is a consumer group of its own, named here. The project's groups are
declared at the bottom of this module; a plugin or a test declares its own with
:func:`declare_consumer`. A handler is registered with :func:`handles`, which refuses a
consumer nobody declared, so a typo fails at import time instead of making a new group::

    @handles(INVENTORY, OrderCreated)
    def reserve_stock(event: OrderCreated, envelope: Envelope) -> None:
        stock_reserve(order_id=event.order_id, lines=event.lines)

A handler that raises ``PermanentError``, or one of the exception classes it lists
in ``permanent=``, gets its event dead-lettered on the first delivery; other
errors are retried first.

A handler runs inside one database transaction together with the consumer's
inbox row, so its relational effect is applied once. A handler that writes
elsewhere (MongoDB) and is idempotent by construction says so with
``idempotent=True`` and runs outside that transaction. ``ALL_EVENTS`` as the
event type receives every event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventing.contract.envelope import Envelope
from eventing.contract.errors import DeclarationError
from eventing.contract.events import Event

ALL_EVENTS = "*"

HandlerFunc = Callable[[Any, Envelope], None]
BatchHandlerFunc = Callable[[list[tuple[Any, Envelope]]], None]


@dataclass(frozen=True)
class Consumer:
    """A consumer group: its name (the group's name in Redis, the inbox's key) and what it does."""

    name: str
    description: str
    # The consumer that writes the MongoDB event log: its "processed" time of an event
    # is the log record's, since it keeps no inbox row.
    writes_event_log: bool = False
    # How long a batch that came short of the read count waits for more entries before it is applied
    # (EVENTING_LINGER_MS_BY_CONSUMER overrides it): for a consumer whose cost is per row rather than per
    # event, so that an order's events, raised milliseconds apart, fold into one write of each row.
    linger_ms: int = 0

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Handler:
    consumer: str
    event_type: str
    func: HandlerFunc | BatchHandlerFunc
    idempotent: bool
    # Errors that mean the event can never be applied: dead-lettered at once.
    permanent: tuple[type[BaseException], ...] = ()
    # Shown on dead letters and in logs; the function's dotted path unless given.
    label: str = ""
    # A batch handler (idempotent only) takes every event of a chunk at once, as a list of
    # (event, envelope): func(items). A failing batch is redone event by event to find the culprit.
    batch: bool = False
    # Runs after the consumer's other handlers, whatever the order they were registered in: the event log
    # and its indexes, which no client waits on, come after the views clients poll.
    runs_last: bool = False

    @property
    def name(self) -> str:
        return self.label or f"{self.func.__module__}.{self.func.__qualname__}"


_CONSUMERS: dict[str, Consumer] = {}
_HANDLERS: dict[str, list[Handler]] = {}


def declare_consumer(name: str, *, description: str, writes_event_log: bool = False, linger_ms: int = 0) -> Consumer:
    """Declare a consumer group. Declaring one name twice with other facts is an error."""
    consumer = Consumer(name=name, description=description, writes_event_log=writes_event_log, linger_ms=linger_ms)
    existing = _CONSUMERS.get(name)
    if existing is not None and existing != consumer:
        raise DeclarationError(f"consumer {name!r} is declared twice, differently")
    if writes_event_log and any(c.writes_event_log and c.name != name for c in _CONSUMERS.values()):
        raise DeclarationError(f"consumer {name!r} cannot write the event log: {event_log_writer().name} does")
    _CONSUMERS[name] = consumer
    return consumer


def consumer(name: str | Consumer) -> Consumer:
    """The declared consumer of that name; DeclarationError when there is none."""
    key = name.name if isinstance(name, Consumer) else name
    try:
        return _CONSUMERS[key]
    except KeyError:
        known = ", ".join(sorted(_CONSUMERS)) or "none"
        raise DeclarationError(f"undeclared consumer {key!r}; declared: {known}") from None


def declared_consumers() -> dict[str, Consumer]:
    return dict(sorted(_CONSUMERS.items()))


def event_log_writer() -> Consumer:
    """The consumer that writes the event log."""
    for declared in _CONSUMERS.values():
        if declared.writes_event_log:
            return declared
    raise DeclarationError("no consumer is declared to write the event log")


def register_handler(handler: Handler) -> Handler:
    """Add one handler; the consumer must be declared, and a handler is registered once per type."""
    consumer(handler.consumer)
    if handler.batch and not handler.idempotent:
        raise DeclarationError(f"{handler.name}: a batch handler must be idempotent (it runs outside the inbox)")
    registered = _HANDLERS.setdefault(handler.consumer, [])
    if any(h.event_type == handler.event_type and h.name == handler.name for h in registered):
        raise DeclarationError(f"{handler.name} is registered twice for {handler.consumer}/{handler.event_type}")
    registered.append(handler)
    registered.sort(key=lambda h: h.runs_last)  # stable: registration order within each kind
    return handler


def handles(
    to: str | Consumer,
    *event_types: type[Event] | str,
    idempotent: bool = False,
    permanent: tuple[type[BaseException], ...] = (),
) -> Callable[[HandlerFunc], HandlerFunc]:
    """Decorator: run the function for these event types in this consumer."""
    name = consumer(to).name
    if not event_types:
        raise DeclarationError("handles() needs at least one event type")

    def decorator(func: HandlerFunc) -> HandlerFunc:
        for event_type in event_types:
            type_name = event_type if isinstance(event_type, str) else event_type.TYPE
            register_handler(
                Handler(consumer=name, event_type=type_name, func=func, idempotent=idempotent, permanent=permanent)
            )
        return func

    return decorator


def consumer_names() -> list[str]:
    """The consumers that have handlers (the ones worth running)."""
    return sorted(_HANDLERS)


def handlers_for(consumer_name: str, event_type: str) -> list[Handler]:
    return [h for h in _HANDLERS.get(consumer_name, []) if h.event_type in (event_type, ALL_EVENTS)]


def consumer_handlers(consumer_name: str) -> list[Handler]:
    return list(_HANDLERS.get(consumer_name, []))


def consumers_of(event_type: str) -> list[str]:
    """Every consumer with a handler for ``event_type`` (or for every event)."""
    return [name for name in consumer_names() if handlers_for(name, event_type)]


# -- The project's consumer groups ------------------------------------------------------------

INVENTORY = declare_consumer(
    "inventory", description="Reserves stock for new orders and releases it for cancelled ones."
)
ORDERS = declare_consumer(
    "orders", description="Learns the catalogue of skus, and confirms or rejects orders on the inventory's answer."
)
PROJECTIONS = declare_consumer(
    "projections",
    description="Projects the read views (each projection registers its own handler here), then writes "
    "every event to the MongoDB event log and its indexes.",
    writes_event_log=True,
    # Its cost is per view row: at 50 orders/s, batches read as they come hold one or two events, and an
    # order's three events rewrite its rows three times. Waiting 30 ms for more once cut FerretDB's CPU per
    # order in a 1,000-order burst from 5.7 to 3.5 ms. Now that an order costs the web and the other
    # consumers less, 10 ms keeps that: bench/order_latency.py's 2,000-order burst ran at 99-107 orders/s
    # (FerretDB 3.1-3.4 ms an order) against 105-109 (3.0-3.1 ms) at 30 ms; an order alone was seen confirmed
    # in 29-34 ms against 53-56 (p50), and bench/soak.py's waves at 50 orders/s had a p99 of 134-159 ms
    # against 139-265.
    linger_ms=10,
)
