"""What the inventory app consumes: orders to reserve for, cancellations to release,
and its own events for the stock view."""

from eventing.events import Envelope
from eventing.registry import handles
from inventory.events import StockAdded, StockReleased, StockReserved
from inventory.read_models import stock_views
from inventory.services import stock_release, stock_reserve
from orders.events import OrderCancelled, OrderCreated


@handles("inventory", OrderCreated)
def reserve_stock(event: OrderCreated, envelope: Envelope) -> None:
    stock_reserve(order_id=event.order_id, lines=event.lines)


@handles("inventory", OrderCancelled)
def release_stock(event: OrderCancelled, envelope: Envelope) -> None:
    stock_release(order_id=event.order_id)


@handles("projections", *stock_views.events, idempotent=True)
def update_stock_view(event: StockAdded | StockReserved | StockReleased, envelope: Envelope) -> None:
    stock_views.apply(event, envelope)
