"""What the orders app consumes: the inventory's answers. Its views are projected by
``orders/read_models.py``, which registers its own handler."""

from eventing.contract.consumers import ORDERS, handles
from eventing.contract.envelope import Envelope
from inventory.events import StockAdded, StockRejected, StockReserved
from orders.services import OrderNotFound, catalog_item_upsert, order_confirm, order_reject


@handles(ORDERS, StockAdded)
def learn_catalog_item(event: StockAdded, envelope: Envelope) -> None:
    catalog_item_upsert(sku=event.sku, name=event.name)


@handles(ORDERS, StockReserved, permanent=(OrderNotFound,))
def confirm_order(event: StockReserved, envelope: Envelope) -> None:
    order_confirm(order_id=event.order_id)


@handles(ORDERS, StockRejected, permanent=(OrderNotFound,))
def reject_order(event: StockRejected, envelope: Envelope) -> None:
    order_reject(order_id=event.order_id, reason=event.reason)
