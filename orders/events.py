"""Events the orders app publishes."""

from dataclasses import dataclass
from typing import Any, ClassVar, TypedDict

from eventing.contract.events import Event, register_event, upcaster


class OrderLineData(TypedDict):
    sku: str
    quantity: int


@dataclass(frozen=True, kw_only=True)
class OrderEvent(Event):
    """An event about one order, keyed by the order's id."""

    AGGREGATE_TYPE: ClassVar[str] = "order"
    AGGREGATE_ID_FIELD: ClassVar[str] = "order_id"

    order_id: str
    customer_id: str


@register_event
@dataclass(frozen=True, kw_only=True)
class OrderCreated(OrderEvent):
    """A customer placed an order. It is PENDING until the inventory reserves or rejects its lines.
    ``channel`` says where the order came from ("api"); ``customer_seq`` is the order's place among its
    customer's orders, from 1."""

    TYPE: ClassVar[str] = "ORDER_CREATED"
    VERSION: ClassVar[int] = 3

    lines: list[OrderLineData]
    placed_at: str
    channel: str
    customer_seq: int


@upcaster("ORDER_CREATED", from_version=1)
def upcast_order_created_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 adds ``channel``; a v1 event did not record where the order came from, so it reads as "unknown"."""
    return {**data, "channel": "unknown"}


@upcaster("ORDER_CREATED", from_version=2)
def upcast_order_created_v2_v3(data: dict[str, Any]) -> dict[str, Any]:
    """v3 adds ``customer_seq``; an order of v2 was placed before orders were numbered, and reads as 0."""
    return {**data, "customer_seq": 0}


@register_event
@dataclass(frozen=True, kw_only=True)
class OrderConfirmed(OrderEvent):
    """The inventory reserved every line of the order: it is CONFIRMED."""

    TYPE: ClassVar[str] = "ORDER_CONFIRMED"


@register_event
@dataclass(frozen=True, kw_only=True)
class OrderRejected(OrderEvent):
    """The inventory could not reserve the order's lines: it is REJECTED, and ``reason`` says which fell short."""

    TYPE: ClassVar[str] = "ORDER_REJECTED"

    reason: str


@register_event
@dataclass(frozen=True, kw_only=True)
class OrderCancelled(OrderEvent):
    """The customer cancelled the order; ``previous_status`` is the status it had. The inventory releases
    the stock it reserved for it."""

    TYPE: ClassVar[str] = "ORDER_CANCELLED"

    previous_status: str
