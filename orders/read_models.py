"""The orders app's read views in MongoDB and the projections that build them.

Every write is idempotent on its own (FerretDB v1 has no transactions): the
current status is guarded by the order's aggregate version, while facts that
never change and history entries are applied whatever the version, so
duplicates and out-of-order events converge to the newest state.
"""

from typing import Any

from mongoengine import DateTimeField, DictField, Document, IntField, ListField, StringField

from eventing.contract.envelope import Envelope, parse_time
from eventing.readside.mongo import RowChange
from eventing.readside.projections import Changes, Projection, register
from orders.events import OrderCancelled, OrderConfirmed, OrderCreated, OrderEvent, OrderRejected

STATUS_BY_EVENT: dict[type[OrderEvent], str] = {
    OrderCreated: "PENDING",
    OrderConfirmed: "CONFIRMED",
    OrderRejected: "REJECTED",
    OrderCancelled: "CANCELLED",
}


class OrderView(Document):
    id = StringField(primary_key=True)
    customer_id = StringField()
    status = StringField()
    reason = StringField(default="")
    lines = ListField(DictField())
    placed_at = DateTimeField()
    updated_at = DateTimeField()
    history = ListField(DictField())
    version = IntField(default=0)

    meta = {"collection": "order_view"}

    def sorted_history(self) -> list[dict[str, Any]]:
        return sorted(self.history, key=lambda entry: entry["version"])


class CustomerOrder(Document):
    """One row per order, for listing a customer's orders newest first."""

    id = StringField(primary_key=True)
    customer_id = StringField(required=True)
    status = StringField()
    placed_at = DateTimeField()
    line_count = IntField()
    total_quantity = IntField()
    version = IntField(default=0)

    meta = {"collection": "customer_orders", "indexes": [("customer_id", "-placed_at")]}


def _reason(event: OrderEvent) -> str:
    if isinstance(event, OrderRejected):
        return event.reason
    if isinstance(event, OrderCancelled):
        return "cancelled by request"
    return ""


def order_view_changes(event: OrderEvent, envelope: Envelope) -> Changes:
    status = STATUS_BY_EVENT[type(event)]
    version = envelope.aggregate_version
    facts: dict[str, Any] = {"customer_id": event.customer_id}
    summary: dict[str, Any] = {"customer_id": event.customer_id}
    if isinstance(event, OrderCreated):
        placed_at = parse_time(event.placed_at)
        facts |= {"lines": list(event.lines), "placed_at": placed_at}
        summary |= {
            "placed_at": placed_at,
            "line_count": len(event.lines),
            "total_quantity": sum(line["quantity"] for line in event.lines),
        }
    history = {"status": status, "at": envelope.occurred_at, "version": version, "event_id": envelope.id}
    return [
        (
            OrderView,
            RowChange(
                key=event.order_id,
                version=version,
                fields={"status": status, "reason": _reason(event), "updated_at": envelope.occurred_at},
                facts=facts,
                add_to_set={"history": history},
            ),
        ),
        (CustomerOrder, RowChange(key=event.order_id, version=version, fields={"status": status}, facts=summary)),
    ]


def _expected_from_database() -> dict[type[Document], dict[str, dict[str, Any]]]:
    from orders.models import Order

    orders = {
        str(o.id): {"status": o.status, "version": o.version, "customer_id": o.customer_id} for o in Order.objects.all()
    }
    return {OrderView: orders, CustomerOrder: orders}


order_views = register(
    Projection(
        name="orders",
        documents=(OrderView, CustomerOrder),
        events=(OrderCreated, OrderConfirmed, OrderRejected, OrderCancelled),
        changes=order_view_changes,
        expected_from_database=_expected_from_database,
    )
)
