"""What the inventory app consumes: orders to reserve for, cancellations to release,
and its own events for the stock view."""

from eventing.events import Envelope
from eventing.registry import handles
from inventory.events import StockAdded, StockReleased, StockReserved
from inventory.read_models import project_stock_added, project_stock_levels
from inventory.services import stock_release, stock_reserve
from orders.events import OrderCancelled, OrderCreated


@handles("inventory", OrderCreated)
def reserve_stock(event: OrderCreated, envelope: Envelope) -> None:
    stock_reserve(order_id=event.order_id, lines=event.lines)


@handles("inventory", OrderCancelled)
def release_stock(event: OrderCancelled, envelope: Envelope) -> None:
    stock_release(order_id=event.order_id)


@handles("projections", StockAdded, idempotent=True)
def update_stock_view_on_add(event: StockAdded, envelope: Envelope) -> None:
    project_stock_added(event=event, envelope=envelope)


@handles("projections", StockReserved, StockReleased, idempotent=True)
def update_stock_view_on_reservation(event: StockReserved | StockReleased, envelope: Envelope) -> None:
    project_stock_levels(items=event.items)
