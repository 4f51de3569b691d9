"""The consumers bench/consumer_throughput.py measures, imported through EVENTING_EXTRA_HANDLER_MODULES
(by the bench itself and by the `manage.py run_consumer` processes it starts), never by the project.

Each reads STOCK_ADDED only: a no-op idempotent handler (the consumer's own cost outside any
transaction), a no-op transactional one (the inbox transaction and nothing else), and an
inventory-like one that makes one small relational write per event.
"""

from eventing.contract.consumers import declare_consumer, handles
from eventing.contract.envelope import Envelope
from inventory.events import StockAdded
from orders.services import catalog_item_upsert

IDEMPOTENT = declare_consumer("bench-idempotent", description="bench: a no-op idempotent handler")
TRANSACTIONAL = declare_consumer("bench-transactional", description="bench: a no-op transactional handler")
INVENTORY_LIKE = declare_consumer("bench-inventory", description="bench: one catalogue upsert per event")


@handles(IDEMPOTENT, StockAdded, idempotent=True)
def ignore_outside_transaction(event: StockAdded, envelope: Envelope) -> None:
    pass


@handles(TRANSACTIONAL, StockAdded)
def ignore_inside_transaction(event: StockAdded, envelope: Envelope) -> None:
    pass


@handles(INVENTORY_LIKE, StockAdded)
def upsert_catalog_item(event: StockAdded, envelope: Envelope) -> None:
    catalog_item_upsert(sku=event.sku, name=event.name)
