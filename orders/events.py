"""Events the orders app publishes."""

from dataclasses import dataclass
from typing import ClassVar, TypedDict

from eventing.events import Event, register_event


class OrderLineData(TypedDict):
    sku: str
    quantity: int


@dataclass(frozen=True, kw_only=True)
class OrderEvent(Event):
    AGGREGATE_TYPE: ClassVar[str] = "order"
    AGGREGATE_ID_FIELD: ClassVar[str] = "order_id"

    order_id: str
    customer_id: str


@register_event
@dataclass(frozen=True, kw_only=True)
class OrderCreated(OrderEvent):
    TYPE: ClassVar[str] = "ORDER_CREATED"

    lines: list[OrderLineData]
    placed_at: str


@register_event
@dataclass(frozen=True, kw_only=True)
class OrderConfirmed(OrderEvent):
    TYPE: ClassVar[str] = "ORDER_CONFIRMED"


@register_event
@dataclass(frozen=True, kw_only=True)
class OrderRejected(OrderEvent):
    TYPE: ClassVar[str] = "ORDER_REJECTED"

    reason: str


@register_event
@dataclass(frozen=True, kw_only=True)
class OrderCancelled(OrderEvent):
    TYPE: ClassVar[str] = "ORDER_CANCELLED"

    previous_status: str
