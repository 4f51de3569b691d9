"""core.inserts.insert writes what the ORM's create() would, in one statement."""

import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from core.inserts import insert
from inventory.models import Reservation
from orders.models import Order, OrderLine

pytestmark = pytest.mark.django_db


def stored(instance):
    """The row as the ORM reads it back, but its primary key and timestamps."""
    row = type(instance).objects.filter(pk=instance.pk).values().get()
    return {k: v for k, v in row.items() if k not in ("id", "created_at", "updated_at")}


def test_a_row_is_written_as_create_writes_it_in_one_statement_with_its_defaults_and_timestamps():
    lines = [{"sku": "A", "quantity": 2}, {"sku": "é", "quantity": 1}]
    by_orm = Reservation.objects.create(order_id=uuid.uuid4(), status="RESERVED", lines=lines)
    with CaptureQueriesContext(connection) as queries:
        [row] = insert([Reservation(order_id=uuid.uuid4(), status="RESERVED", lines=lines)])

    assert len(queries) == 1
    assert row.pk is not None and not row._state.adding
    assert {**stored(row), "order_id": None} == {**stored(by_orm), "order_id": None}
    assert stored(row)["lines"] == lines and stored(row)["version"] == 1  # a default
    read = Reservation.objects.get(pk=row.pk)
    # auto_now_add and auto_now: set on the instance, and written.
    assert (row.created_at, row.updated_at) == (read.created_at, read.updated_at)
    assert row.created_at is not None and row.updated_at is not None


def test_rows_with_a_primary_key_of_their_own_and_rows_that_point_at_them():
    [order] = insert([Order(customer_id="c-1", customer_seq=3)])
    lines = insert([OrderLine(order=order, sku=f"SKU-{i}", quantity=i + 1) for i in range(3)])

    assert Order.objects.get(pk=order.pk).customer_seq == 3
    # Each instance holds the key its row was given, in the order of the rows.
    assert [(line.pk, line.sku) for line in lines] == list(order.lines.order_by("pk").values_list("pk", "sku"))


def test_more_rows_than_one_statement_takes_go_in_several():
    [order] = insert([Order(customer_id="c-1")])
    most = connection.features.max_query_params
    count = (most // 3 + 1) if most else 500  # OrderLine writes three columns
    lines = insert([OrderLine(order=order, sku=f"SKU-{i}", quantity=1) for i in range(count)])
    assert len({line.pk for line in lines}) == count == order.lines.count()


def test_what_the_database_refuses_is_raised_and_writes_nothing():
    [order] = insert([Order(customer_id="c-1")])
    with pytest.raises(IntegrityError), transaction.atomic():
        insert([OrderLine(order=order, sku="SKU-1", quantity=1), OrderLine(order=order, sku="SKU-1", quantity=2)])
    assert not order.lines.exists()
