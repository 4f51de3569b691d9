"""Events the inventory app publishes.

Reservation events carry the new on-hand and reserved counts of every item
they touched, with the item's version, so the stock view can apply them in
any order.
"""

from dataclasses import dataclass
from typing import ClassVar, TypedDict

from eventing.contract.events import Event, register_event


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
    """Stock of an item arrived, for a new item or a restock: ``quantity`` is what arrived, ``on_hand``
    and ``reserved`` the item's counts afterwards."""

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
    """An event about the stock reservation of one order, keyed by the order's id."""

    AGGREGATE_TYPE: ClassVar[str] = "reservation"
    AGGREGATE_ID_FIELD: ClassVar[str] = "order_id"

    order_id: str


@register_event
@dataclass(frozen=True, kw_only=True)
class StockReserved(ReservationEvent):
    """Every line of the order was reserved; ``items`` holds the new counts of each item it touched."""

    TYPE: ClassVar[str] = "STOCK_RESERVED"

    lines: list[ReservedLineData]
    items: list[ItemStateData]


@register_event
@dataclass(frozen=True, kw_only=True)
class StockRejected(ReservationEvent):
    """The order could not be reserved, so nothing was; ``lines`` says per sku what was requested and what
    was available."""

    TYPE: ClassVar[str] = "STOCK_REJECTED"

    reason: str
    lines: list[ShortfallData]


@register_event
@dataclass(frozen=True, kw_only=True)
class StockReleased(ReservationEvent):
    """A cancelled order's reservation was given back; ``items`` holds the new counts of each item it touched."""

    TYPE: ClassVar[str] = "STOCK_RELEASED"

    lines: list[ReservedLineData]
    items: list[ItemStateData]
