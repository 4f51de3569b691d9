"""What the orders app consumes: the inventory's answers, and its own events for the views."""

from eventing.events import Envelope
from eventing.registry import handles
from inventory.events import StockAdded, StockRejected, StockReserved
from orders.events import OrderEvent
from orders.read_models import order_views
from orders.services import OrderNotFound, catalog_item_upsert, order_confirm, order_reject


@handles("orders", StockAdded)
def learn_catalog_item(event: StockAdded, envelope: Envelope) -> None:
    catalog_item_upsert(sku=event.sku, name=event.name)


@handles("orders", StockReserved, permanent=(OrderNotFound,))
def confirm_order(event: StockReserved, envelope: Envelope) -> None:
    order_confirm(order_id=event.order_id)


@handles("orders", StockRejected, permanent=(OrderNotFound,))
def reject_order(event: StockRejected, envelope: Envelope) -> None:
    order_reject(order_id=event.order_id, reason=event.reason)


@handles("projections", *order_views.events, idempotent=True)
def update_order_views(event: OrderEvent, envelope: Envelope) -> None:
    order_views.apply(event, envelope)
