"""The inventory's relational state recomputed from events alone.

Proves the log can rebuild the application's state: stock levels come from
the counts every stock event carries (newest item version wins), and each
order's reservation from its reservation events (newest version wins).
"""

from typing import Any

from eventing.readside.state_checks import logged_events, state_check
from inventory.events import StockAdded, StockRejected, StockReleased, StockReserved
from inventory.models import Reservation, StockItem

RESERVATION_STATUS = {
    StockReserved.TYPE: Reservation.Status.RESERVED,
    StockRejected.TYPE: Reservation.Status.REJECTED,
    StockReleased.TYPE: Reservation.Status.RELEASED,
}


def inventory_from_events() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(stock per sku, reservation per order) as the events say they should be."""
    stock: dict[str, dict[str, Any]] = {}
    reservations: dict[str, dict[str, Any]] = {}

    def level(sku: str, on_hand: int, reserved: int, version: int, name: str | None = None) -> None:
        row = stock.setdefault(sku, {"version": 0})
        if name is not None:
            row["name"] = name
        if version > row["version"]:
            row.update(on_hand=on_hand, reserved=reserved, version=version)

    types = [StockAdded.TYPE, *RESERVATION_STATUS]
    for envelope, event in logged_events(types=types):
        if isinstance(event, StockAdded):
            level(event.sku, event.on_hand, event.reserved, envelope.aggregate_version, event.name)
            continue
        for item in getattr(event, "items", []):
            level(item["sku"], item["on_hand"], item["reserved"], item["version"])
        row = reservations.setdefault(event.order_id, {"version": 0})
        if envelope.aggregate_version > row["version"]:
            row.update(status=RESERVATION_STATUS[envelope.type], version=envelope.aggregate_version)
    return stock, reservations


@state_check("inventory")
def inventory_state_check() -> list[str]:
    stock, reservations = inventory_from_events()
    differences = []
    items = {item.sku: item for item in StockItem.objects.all()}
    for sku in sorted(set(stock) | set(items)):
        item, expected = items.get(sku), stock.get(sku)
        if item is None or expected is None:
            differences.append(f"stock {sku}: {'no row in the database' if item is None else 'no event created it'}")
            continue
        for name in ("name", "on_hand", "reserved", "version"):
            if getattr(item, name) != expected.get(name):
                differences.append(
                    f"stock {sku}: {name} is {getattr(item, name)!r}, the events say {expected.get(name)!r}"
                )
    # A CANCELLED reservation marks an order cancelled before it was reserved; it emits no event.
    rows = {str(r.order_id): r for r in Reservation.objects.exclude(status=Reservation.Status.CANCELLED)}
    for order_id in sorted(set(reservations) | set(rows)):
        row, expected = rows.get(order_id), reservations.get(order_id)
        if row is None or expected is None:
            differences.append(f"reservation {order_id}: {'no row' if row is None else 'no event'}")
        elif (row.status, row.version) != (expected["status"], expected["version"]):
            differences.append(
                f"reservation {order_id}: {row.status} v{row.version}, the events say "
                f"{expected['status']} v{expected['version']}"
            )
    return differences
