import json

import pytest
from django.db import transaction

from core.exceptions import InvalidInput
from eventing.models import OutboxEvent
from inventory.models import Reservation, StockItem
from inventory.services import (
    MAX_ON_HAND,
    ReservationConflict,
    StockItemNotFound,
    _shift_reserved,
    stock_item_create,
    stock_item_restock,
    stock_release,
    stock_reserve,
)

pytestmark = pytest.mark.django_db

ORDER = "6f1c1a52-5a0e-4d55-9c2c-1f6f0f8b2a01"


def events() -> list[dict]:
    return [json.loads(row.payload) for row in OutboxEvent.objects.order_by("id")]


def item(sku: str) -> StockItem:
    return StockItem.objects.get(sku=sku)


def test_creating_and_restocking_an_item_emits_stock_added_with_the_new_counts():
    stock_item_create(sku="A", name="Apple", quantity=5)
    stock_item_restock(sku="A", quantity=3)

    assert (item("A").on_hand, item("A").version) == (8, 2)
    added = events()
    assert [e["type"] for e in added] == ["STOCK_ADDED", "STOCK_ADDED"]
    assert added[1]["data"] == {"sku": "A", "name": "Apple", "quantity": 3, "on_hand": 8, "reserved": 0}
    assert added[1]["aggregate_version"] == 2


def test_bad_stock_input_is_refused_and_writes_nothing():
    stock_item_create(sku="A", name="Apple", quantity=5)
    with pytest.raises(InvalidInput) as duplicate:
        stock_item_create(sku="A", name="Again", quantity=1)
    assert "already exists" in duplicate.value.field_errors["sku"][0]
    for quantity in (0, -1, True, 1.5):
        with pytest.raises(InvalidInput):
            stock_item_restock(sku="A", quantity=quantity)
    with pytest.raises(InvalidInput):
        stock_item_restock(sku="A", quantity=MAX_ON_HAND)
    with pytest.raises(StockItemNotFound):
        stock_item_restock(sku="NOPE", quantity=1)
    assert item("A").on_hand == 5
    assert OutboxEvent.objects.count() == 1


def test_a_reservation_takes_every_line_and_reports_the_new_counts():
    stock_item_create(sku="A", name="Apple", quantity=5)
    stock_item_create(sku="B", name="Banana", quantity=2)

    reservation = stock_reserve(order_id=ORDER, lines=[{"sku": "B", "quantity": 2}, {"sku": "A", "quantity": 1}])

    assert reservation.status == Reservation.Status.RESERVED
    assert (item("A").reserved, item("B").reserved) == (1, 2)
    reserved = events()[-1]
    assert reserved["type"] == "STOCK_RESERVED"
    assert reserved["aggregate_id"] == ORDER
    assert reserved["data"]["items"] == [
        {"sku": "A", "on_hand": 5, "reserved": 1, "version": 2},
        {"sku": "B", "on_hand": 2, "reserved": 2, "version": 2},
    ]


def test_a_reservation_that_cannot_be_met_reserves_nothing_and_reports_each_shortfall():
    stock_item_create(sku="A", name="Apple", quantity=5)
    stock_item_create(sku="B", name="Banana", quantity=2)

    stock_item_create(sku="C", name="Cherry", quantity=4)
    stock_reserve(order_id="0c8a3c8e-51c5-4a47-9d1e-0d0c5b1f0a01", lines=[{"sku": "C", "quantity": 3}])

    lines = [
        {"sku": "A", "quantity": 1},
        {"sku": "Z", "quantity": 1},
        {"sku": "C", "quantity": 2},
        {"sku": "B", "quantity": 3},
    ]
    reservation = stock_reserve(order_id=ORDER, lines=lines)

    assert reservation.status == Reservation.Status.REJECTED
    assert (item("A").reserved, item("B").reserved, item("C").reserved) == (0, 0, 3)
    rejected = events()[-1]
    assert rejected["type"] == "STOCK_REJECTED"
    assert rejected["data"]["reason"] == "insufficient stock: B short by 1, C short by 1, Z short by 1"
    # What is available is on hand less what is reserved; a sku the inventory never stocked has none.
    assert rejected["data"]["lines"] == [
        {"sku": "A", "requested": 1, "available": 5, "shortfall": 0},
        {"sku": "B", "requested": 3, "available": 2, "shortfall": 1},
        {"sku": "C", "requested": 2, "available": 1, "shortfall": 1},
        {"sku": "Z", "requested": 1, "available": 0, "shortfall": 1},
    ]


def test_an_order_without_lines_reserves_nothing():
    reservation = stock_reserve(order_id=ORDER, lines=[])
    assert (reservation.status, reservation.lines) == (Reservation.Status.RESERVED, [])
    assert events()[-1]["data"]["lines"] == []


def test_reserving_twice_for_one_order_keeps_the_first_decision():
    stock_item_create(sku="A", name="Apple", quantity=5)
    stock_reserve(order_id=ORDER, lines=[{"sku": "A", "quantity": 2}])
    stock_reserve(order_id=ORDER, lines=[{"sku": "A", "quantity": 2}])
    assert item("A").reserved == 2
    assert [e["type"] for e in events()].count("STOCK_RESERVED") == 1


def test_releasing_returns_the_stock_once():
    stock_item_create(sku="A", name="Apple", quantity=5)
    stock_reserve(order_id=ORDER, lines=[{"sku": "A", "quantity": 2}])

    stock_release(order_id=ORDER)
    stock_release(order_id=ORDER)

    assert (item("A").reserved, item("A").on_hand) == (0, 5)
    released = [e for e in events() if e["type"] == "STOCK_RELEASED"]
    assert len(released) == 1
    assert released[0]["aggregate_version"] == 2
    assert released[0]["data"]["items"] == [{"sku": "A", "on_hand": 5, "reserved": 0, "version": 3}]


def test_a_cancellation_seen_before_its_order_prevents_a_later_reservation():
    stock_item_create(sku="A", name="Apple", quantity=5)
    stock_release(order_id=ORDER)
    reservation = stock_reserve(order_id=ORDER, lines=[{"sku": "A", "quantity": 2}])
    assert reservation.status == Reservation.Status.CANCELLED
    assert item("A").reserved == 0


def test_the_database_refuses_reserving_more_than_is_on_hand():
    from django.db import IntegrityError, transaction

    stock_item_create(sku="A", name="Apple", quantity=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        StockItem.objects.filter(sku="A").update(reserved=2)


def test_a_shift_of_reservations_returns_the_new_states_and_one_that_would_break_a_bound_changes_nothing():
    # The guard behind the locks: no reservation takes more than is on hand, and no release frees more than
    # was reserved, even if a count changed under a lock.
    stock_item_create(sku="A", name="Apple", quantity=5)
    stock_item_create(sku="B", name="Banana", quantity=1)

    assert _shift_reserved({"A": 2, "B": 1}, sign=1) == [
        {"sku": "A", "on_hand": 5, "reserved": 2, "version": 2},
        {"sku": "B", "on_hand": 1, "reserved": 1, "version": 2},
    ]
    with pytest.raises(ReservationConflict, match="stock of B changed"), transaction.atomic():
        _shift_reserved({"A": 1, "B": 1}, sign=1)
    with pytest.raises(ReservationConflict, match="stock of A changed"), transaction.atomic():
        _shift_reserved({"A": 3}, sign=-1)

    assert [(item(sku).reserved, item(sku).version) for sku in "AB"] == [(2, 2), (1, 2)]
    assert _shift_reserved({"A": 2}, sign=-1) == [{"sku": "A", "on_hand": 5, "reserved": 0, "version": 3}]
