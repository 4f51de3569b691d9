"""A consumer only the ordering test runs (via EVENTING_EXTRA_HANDLER_MODULES).

"sequencer" applies STOCK_ADDED events of a few skus and checks, in the same transaction as its effect,
that each sku's events come in version order, each once: it keeps the last version applied per sku and
records any event that does not follow it as a violation. Its rows live in the catalogue table, under
keys no real sku can have.
"""

import uuid

from eventing.contract.consumers import declare_consumer, handles
from eventing.contract.envelope import Envelope
from inventory.events import StockAdded
from orders.models import CatalogItem

SEQUENCER = declare_consumer("sequencer", description="Checks per-aggregate order (the ordering fault test).")


@handles(SEQUENCER, StockAdded)
def apply_in_order(event: StockAdded, envelope: Envelope) -> None:
    key = f"last:{event.sku}"
    row = CatalogItem.objects.select_for_update().filter(sku=key).first()
    last = int(row.name) if row else 0
    if envelope.aggregate_version != last + 1:
        CatalogItem.objects.create(
            sku=f"violation:{uuid.uuid4().hex[:12]}",
            name=f"{event.sku} v{envelope.aggregate_version} after v{last}",
        )
    CatalogItem.objects.update_or_create(sku=key, defaults={"name": str(max(last, envelope.aggregate_version))})
