import json

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from core.exceptions import InvalidInput
from eventing.models import OutboxEvent
from orders.models import CatalogItem, Order, OrderLine
from orders.services import (
    MAX_LINES,
    OrderLineIn,
    OrderNotCancellable,
    OrderNotFound,
    order_cancel,
    order_confirm,
    order_line_sku_errors,
    order_place,
    order_reject,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def catalog():
    CatalogItem.objects.bulk_create([CatalogItem(sku=f"SKU-{i}", name=f"Item {i}") for i in range(MAX_LINES + 1)])


def events() -> list[dict]:
    return [json.loads(row.payload) for row in OutboxEvent.objects.order_by("id")]


def place(*lines: tuple[str, int], customer: str = "alice") -> Order:
    return order_place(customer_id=customer, lines=[OrderLineIn(sku=s, quantity=q) for s, q in lines])


def test_each_customers_orders_are_numbered_from_one_and_a_rolled_back_order_leaves_no_gap():
    numbers = [place(("SKU-1", 1), customer=customer).customer_seq for customer in ("alice", "bob", "alice", "alice")]
    assert numbers == [1, 1, 2, 3]
    with pytest.raises(RuntimeError), transaction.atomic():
        place(("SKU-1", 1))
        raise RuntimeError("the caller's transaction fails after placing the order")
    with pytest.raises(InvalidInput):
        place(("NOPE", 1))

    assert place(("SKU-1", 1)).customer_seq == 4
    assert [event["data"]["customer_seq"] for event in events()] == [1, 1, 2, 3, 4]


def test_placing_an_order_stores_it_pending_and_emits_order_created():
    order = place(("SKU-1", 2), ("SKU-2", 1))

    assert order.status == Order.Status.PENDING
    assert list(order.lines.order_by("sku").values_list("sku", "quantity")) == [("SKU-1", 2), ("SKU-2", 1)]
    [created] = events()
    assert created["type"] == "ORDER_CREATED"
    assert created["aggregate_id"] == str(order.id)
    assert created["data"]["lines"] == [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 1}]
    assert created["data"]["customer_id"] == "alice"


@pytest.mark.parametrize(
    ("lines", "field_error"),
    [
        ([], "at least one line"),
        ([(f"SKU-{i}", 1) for i in range(MAX_LINES + 1)], "at most 100 lines"),
        ([("NOPE", 1)], "Unknown sku 'NOPE'"),
        ([("SKU-1", 1), ("SKU-1", 2)], "more than one line"),
        ([("SKU-1", 0)], "positive integer"),
    ],
)
def test_bad_orders_are_refused_with_field_errors_and_write_nothing(lines, field_error):
    with pytest.raises(InvalidInput) as refused:
        place(*lines)
    assert field_error in json.dumps(refused.value.field_errors)
    assert not Order.objects.exists()
    assert not OrderLine.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_the_lines_are_checked_before_the_transaction_takes_the_write_lock():
    """On SQLite the order's transaction holds the one write lock from its first statement: the catalogue
    is read before it, and a refused order never opens it."""
    with CaptureQueriesContext(connection) as refused, pytest.raises(InvalidInput):
        place(("NOPE", 1))
    with CaptureQueriesContext(connection) as placed:
        place(("SKU-1", 1))

    def kinds(queries: CaptureQueriesContext) -> list[str]:
        # Inside the test's own transaction, the order's atomic block is a savepoint.
        return [query["sql"].split()[0].upper() for query in queries.captured_queries]

    assert kinds(refused) == ["SELECT"]  # the catalogue, and nothing after it
    assert kinds(placed)[:2] == ["SELECT", "SAVEPOINT"]


def test_line_errors_take_the_shape_of_drfs_own_for_a_list():
    with pytest.raises(InvalidInput) as empty:
        place()
    assert empty.value.field_errors == {"lines": {"non_field_errors": ["An order needs at least one line."]}}
    with pytest.raises(InvalidInput) as twice:
        place(("SKU-1", 1), ("NOPE", 1), ("SKU-1", 2))
    assert twice.value.field_errors == {
        "lines": {1: {"sku": ["Unknown sku 'NOPE'."]}, 2: {"sku": ["Sku 'SKU-1' appears on more than one line."]}}
    }


def test_the_catalogues_rules_answer_by_the_index_they_are_given_in_one_query_or_none():
    with CaptureQueriesContext(connection) as queries:
        assert order_line_sku_errors(skus={}) == {}
    assert not queries.captured_queries
    with CaptureQueriesContext(connection) as queries:
        found = order_line_sku_errors(skus={5: "SKU-1", 0: "NOPE", 7: "SKU-1", 2: "NOPE"})
    assert found == {
        0: ["Unknown sku 'NOPE'."],
        2: ["Unknown sku 'NOPE'."],
        7: ["Sku 'SKU-1' appears on more than one line."],
    }
    assert len(queries.captured_queries) == 1
    with pytest.raises(ValueError, match="at most 100 lines"):
        order_line_sku_errors(skus={i: f"SKU-{i}" for i in range(MAX_LINES + 1)})


def test_stock_answers_confirm_or_reject_only_pending_orders():
    confirmed, rejected = place(("SKU-1", 1)), place(("SKU-2", 1))
    placed_at = confirmed.updated_at

    # Any spelling of the id finds the order; the events carry it as str(UUID) writes it.
    assert order_confirm(order_id=str(confirmed.id).upper()) is True
    assert order_reject(order_id=str(rejected.id), reason="insufficient stock: SKU-2 short by 1") is True
    assert order_confirm(order_id=str(rejected.id)) is False  # a late, contradicting answer changes nothing

    confirmed.refresh_from_db()
    rejected.refresh_from_db()
    assert (confirmed.status, confirmed.version) == (Order.Status.CONFIRMED, 2)
    assert confirmed.updated_at > placed_at
    assert (rejected.status, rejected.reason, rejected.version) == (
        Order.Status.REJECTED,
        "insufficient stock: SKU-2 short by 1",
        2,
    )
    assert [e["type"] for e in events()] == ["ORDER_CREATED", "ORDER_CREATED", "ORDER_CONFIRMED", "ORDER_REJECTED"]
    confirmation, rejection = events()[2:]
    assert (confirmation["aggregate_id"], confirmation["aggregate_version"]) == (str(confirmed.id), 2)
    assert confirmation["data"] == {"order_id": str(confirmed.id), "customer_id": "alice"}
    assert (rejection["aggregate_id"], rejection["aggregate_version"]) == (str(rejected.id), 2)
    assert rejection["data"]["customer_id"] == "alice"


@pytest.mark.parametrize("confirm_first", [False, True])
def test_pending_and_confirmed_orders_can_be_cancelled(confirm_first):
    order = place(("SKU-1", 1))
    if confirm_first:
        order_confirm(order_id=str(order.id))

    cancelled = order_cancel(order_id=str(order.id))

    assert cancelled.status == Order.Status.CANCELLED
    last = events()[-1]
    assert last["type"] == "ORDER_CANCELLED"
    assert last["data"]["previous_status"] == ("CONFIRMED" if confirm_first else "PENDING")


def test_final_orders_cannot_be_cancelled_and_unknown_ones_are_not_found():
    order = place(("SKU-1", 1))
    order_reject(order_id=str(order.id), reason="no stock")
    with pytest.raises(OrderNotCancellable, match="is REJECTED"):
        order_cancel(order_id=str(order.id))
    with pytest.raises(OrderNotFound):
        order_cancel(order_id="6f1c1a52-5a0e-4d55-9c2c-1f6f0f8b2a01")
    with pytest.raises(OrderNotFound):
        order_confirm(order_id="not-a-uuid")
    with pytest.raises(OrderNotFound):
        order_reject(order_id="6f1c1a52-5a0e-4d55-9c2c-1f6f0f8b2a01", reason="no stock")
