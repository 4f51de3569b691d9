"""Projections in batches: two projections consumers on hot rows under load converge, and a customer's
listing is served from its month buckets, newest first, a page at a time, through its years."""

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from eventing.consumer.runner import StreamConsumer
from eventing.contract.envelope import Envelope
from eventing.readside import projections
from eventing.readside.mongo import apply_changes
from eventing.readside.projections import active_collection
from eventing.readside.replay import verify_views
from inventory.events import StockAdded, StockReserved
from orders.events import OrderConfirmed, OrderCreated
from orders.read_models import CustomerOrderIndex, CustomerOrderMonth, CustomerOrderYear, pack_summary, unpack_summary
from orders.selectors import customer_order_list
from tests.eventing.test_consumer import xadd

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = 150


def order_events(customer: str, n: int, placed_at: datetime) -> tuple[Envelope, Envelope, Envelope]:
    """An order's ORDER_CREATED and ORDER_CONFIRMED, and the STOCK_RESERVED that moves the hot sku."""
    order_id = str(uuid.uuid4())
    created = Envelope.wrap(
        OrderCreated(
            order_id=order_id,
            customer_id=customer,
            lines=[{"sku": "HOT", "quantity": 1}],
            placed_at=placed_at.isoformat(),
            channel="api",
        ),
        aggregate_version=1,
    )
    reserved = Envelope.wrap(
        StockReserved(
            order_id=order_id,
            lines=[{"sku": "HOT", "quantity": 1}],
            items=[{"sku": "HOT", "on_hand": 1000, "reserved": n + 1, "version": n + 2}],
        ),
        aggregate_version=1,
    )
    confirmed = Envelope.wrap(OrderConfirmed(order_id=order_id, customer_id=customer), aggregate_version=2)
    return created, reserved, confirmed


def test_two_projections_consumers_on_hot_rows_under_load_converge(redis_client, stream):
    # One sku every order reserves, and one customer (so one month bucket and one index row) for all of
    # them: every batch of both consumers touches the same rows.
    xadd(
        redis_client,
        stream,
        Envelope.wrap(StockAdded(sku="HOT", name="hot", quantity=1000, on_hand=1000, reserved=0), aggregate_version=1),
    )
    start = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    envelopes = [e for n in range(ORDERS) for e in order_events("hot-customer", n, start + timedelta(seconds=n))]
    random.Random(7).shuffle(envelopes)  # out of order, as partitions and retries deliver them
    for envelope in envelopes:
        xadd(redis_client, stream, envelope)

    errors: list[BaseException] = []

    def consume(consumer_id: str) -> None:
        try:
            StreamConsumer(name="projections", consumer_id=consumer_id, count=20, block_ms=5).run_until_idle()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(f"p{i}",)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert redis_client.xpending(stream, "projections")["pending"] == 0
    listing = customer_order_list(customer_id="hot-customer")
    assert listing.count() == ORDERS
    summaries = listing[0:ORDERS]
    assert {s["status"] for s in summaries} == {"CONFIRMED"}
    assert [s["placed_at"] for s in summaries] == sorted((s["placed_at"] for s in summaries), reverse=True)
    assert verify_views() == []  # every live row equals the fold of the whole log


def test_a_customers_listing_pages_newest_first_across_months(redis_client, stream):
    start = datetime(2026, 9, 20, 22, 0, tzinfo=UTC)
    placed = [start + timedelta(days=3 * n) for n in range(30)]  # over four months
    for n, moment in enumerate(placed):
        created, _reserved, _confirmed = order_events("alice", n, moment)
        xadd(redis_client, stream, created)
    StreamConsumer(name="projections", block_ms=5).run_until_idle()

    listing = customer_order_list(customer_id="alice")

    assert listing.count() == 30
    assert [s["placed_at"] for s in listing[0:30]] == sorted(placed, reverse=True)
    assert [s["placed_at"] for s in listing[5:12]] == sorted(placed, reverse=True)[5:12]
    assert [s["status"] for s in listing[0:3]] == ["PENDING"] * 3
    assert customer_order_list(customer_id="nobody").count() == 0


def test_a_customers_listing_pages_across_years_and_a_new_order_rewrites_no_document_of_their_whole_history(
    redis_client, stream, monkeypatch
):
    start = datetime(2024, 11, 15, 12, 0, tzinfo=UTC)
    placed = [start + timedelta(days=31 * n) for n in range(30)]  # a month each, over four years
    for n, moment in enumerate(placed):
        xadd(redis_client, stream, order_events("carol", n, moment)[0])
    StreamConsumer(name="projections", block_ms=5).run_until_idle()

    listing = customer_order_list(customer_id="carol")
    newest_first = sorted(placed, reverse=True)
    assert listing.count() == 30
    assert [s["placed_at"] for s in listing[0:30]] == newest_first
    assert [s["placed_at"] for s in listing[8:16]] == newest_first[8:16]  # a page across a new year
    index = active_collection(CustomerOrderIndex).find_one({"_id": "carol"})
    assert sorted(index["years"]) == ["2024", "2025", "2026", "2027"]
    years = {row["year"]: row["months"] for row in active_collection(CustomerOrderYear).find()}
    assert {year: len(months) for year, months in years.items()} == {"2024": 2, "2025": 12, "2026": 12, "2027": 4}

    # Another order in a year she has ordered in: its month and its year change, her index does not.
    changed: dict[str, list[str]] = {}

    def recording(collection, changes, **kwargs):
        rows = apply_changes(collection, changes, **kwargs)
        changed.setdefault(collection.name, []).extend(rows)
        return rows

    monkeypatch.setattr(projections, "apply_changes", recording)
    later = placed[-1] + timedelta(days=1)
    xadd(redis_client, stream, order_events("carol", 30, later)[0])
    StreamConsumer(name="projections", block_ms=5).run_until_idle()

    month = later.strftime("%Y-%m")
    assert changed["customer_order_months"] == [f"carol|{month}"]
    assert changed["customer_order_years"] == ["carol|2027"]
    assert changed["customer_order_index"] == []  # touched, found as it was, not written
    assert customer_order_list(customer_id="carol")[0]["placed_at"] == later
    assert verify_views() == []
    # A month holds each order's summary packed in one string, its version first.
    newest = customer_order_list(customer_id="carol")[0]["id"]
    stored = active_collection(CustomerOrderMonth).find_one({"_id": f"carol|{month}"})
    packed = pack_summary(version=1, status="PENDING", placed_at=later, line_count=1, total_quantity=1)
    assert stored["orders"][newest] == packed
    assert packed.startswith("1|PENDING|") and unpack_summary(packed)["placed_at"] == later
    # A month an earlier version wrote (a document per order) still lists, until the upgrade's rebuild.
    unpacked = unpack_summary(packed)
    active_collection(CustomerOrderMonth).update_one(
        {"_id": f"carol|{month}"}, {"$set": {f"orders.{newest}": unpacked}}
    )
    assert customer_order_list(customer_id="carol")[0] == {"id": newest, "customer_id": "carol", **unpacked}
