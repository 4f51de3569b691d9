"""What the inventory app consumes: orders to reserve for, and cancellations to release. Its stock
view is projected by ``inventory/read_models.py``, which registers its own handler."""

from eventing.contract.consumers import INVENTORY, handles
from eventing.contract.envelope import Envelope
from inventory.services import stock_release, stock_reserve
from orders.events import OrderCancelled, OrderCreated


@handles(INVENTORY, OrderCreated)
def reserve_stock(event: OrderCreated, envelope: Envelope) -> None:
    stock_reserve(order_id=event.order_id, lines=event.lines)


@handles(INVENTORY, OrderCancelled)
def release_stock(event: OrderCancelled, envelope: Envelope) -> None:
    stock_release(order_id=event.order_id)
