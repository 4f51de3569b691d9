"""Events the inventory app publishes.

Reservation events carry the new on-hand and reserved counts of every item
they touched, with the item's version, so the stock view can apply them in
any order.
"""

from dataclasses import dataclass
from typing import ClassVar, TypedDict

from eventing.events import Event, register_event


class ItemStateData(TypedDict):
    sku: str
    on_hand: int
    reserved: int
    version: int


class ReservedLineData(TypedDict):
    sku: str
    quantity: int


class ShortfallData(TypedDict):
    sku: str
    requested: int
    available: int
    shortfall: int


@register_event
@dataclass(frozen=True, kw_only=True)
class StockAdded(Event):
    TYPE: ClassVar[str] = "STOCK_ADDED"
    AGGREGATE_TYPE: ClassVar[str] = "stock_item"
    AGGREGATE_ID_FIELD: ClassVar[str] = "sku"

    sku: str
    name: str
    quantity: int
    on_hand: int
    reserved: int


@dataclass(frozen=True, kw_only=True)
class ReservationEvent(Event):
    AGGREGATE_TYPE: ClassVar[str] = "reservation"
    AGGREGATE_ID_FIELD: ClassVar[str] = "order_id"

    order_id: str


@register_event
@dataclass(frozen=True, kw_only=True)
class StockReserved(ReservationEvent):
    TYPE: ClassVar[str] = "STOCK_RESERVED"

    lines: list[ReservedLineData]
    items: list[ItemStateData]


@register_event
@dataclass(frozen=True, kw_only=True)
class StockRejected(ReservationEvent):
    TYPE: ClassVar[str] = "STOCK_REJECTED"

    reason: str
    lines: list[ShortfallData]


@register_event
@dataclass(frozen=True, kw_only=True)
class StockReleased(ReservationEvent):
    TYPE: ClassVar[str] = "STOCK_RELEASED"

    lines: list[ReservedLineData]
    items: list[ItemStateData]
