"""A consumer only the fault tests run (via EVENTING_EXTRA_HANDLER_MODULES).

"audit" records every order it sees. Its audit store rejects the orders of
the customer "poison" until the file named by POISON_FIXED_FILE exists: the
cause a team would fix before retrying the dead letter.
"""

import os
from pathlib import Path

from eventing.contract.consumers import declare_consumer, handles
from eventing.contract.envelope import Envelope
from orders.events import OrderCreated
from orders.models import CatalogItem

AUDIT = declare_consumer("audit", description="Records every order it sees (the fault tests' poison consumer).")


@handles(AUDIT, OrderCreated)
def audit_order(event: OrderCreated, envelope: Envelope) -> None:
    if event.customer_id == "poison" and not Path(os.environ["POISON_FIXED_FILE"]).exists():
        raise RuntimeError("the audit store rejects this order")
    # The audit row; the consumer's inbox makes it once per event.
    CatalogItem.objects.create(sku=f"audit:{event.order_id}", name=f"audited by {envelope.id}")
