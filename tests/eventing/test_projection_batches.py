"""Projections in batches: two projections consumers on hot rows under load converge, and a customer's
listing is served from chunks of their orders by number, newest first, a page at a time, through their count."""

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
from orders.read_models import CHUNK_SIZE, CustomerOrderChunk, CustomerOrderCount, pack_summary, unpack_summary
from orders.selectors import customer_order_list
from tests.eventing.test_consumer import xadd

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = 150


def order_events(customer: str, n: int, placed_at: datetime) -> tuple[Envelope, Envelope, Envelope]:
    """The customer's ``n``th order's (from 0) ORDER_CREATED and ORDER_CONFIRMED, and the STOCK_RESERVED that
    moves the hot sku."""
    order_id = str(uuid.uuid4())
    created = Envelope.wrap(
        OrderCreated(
            order_id=order_id,
            customer_id=customer,
            customer_seq=n + 1,
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
    # One sku every order reserves, and one customer (so three chunks and one count row) for all of them:
    # every batch of both consumers touches the same rows.
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
    assert [s["customer_seq"] for s in summaries] == list(range(ORDERS, 0, -1))
    assert [s["placed_at"] for s in summaries] == sorted((s["placed_at"] for s in summaries), reverse=True)
    assert verify_views() == []  # every live row equals the fold of the whole log


def legacy_created(customer: str, placed_at: datetime) -> Envelope:
    """An ORDER_CREATED as v2 wrote it, before orders were numbered: it upcasts to ``customer_seq`` 0."""
    doc = order_events(customer, 0, placed_at)[0].to_dict()
    data = {name: value for name, value in doc["data"].items() if name != "customer_seq"}
    return Envelope.from_dict({**doc, "version": 2, "data": data})


def newest_first(listing, start: int, stop: int) -> list[int]:
    return [summary["customer_seq"] for summary in listing[start:stop]]


def test_a_customers_listing_pages_newest_first_across_chunks(redis_client, stream):
    orders = 2 * CHUNK_SIZE + 30
    start = datetime(2026, 9, 20, 22, 0, tzinfo=UTC)
    placed = [start + timedelta(hours=n) for n in range(orders)]
    envelopes = [order_events("alice", n, moment)[0] for n, moment in enumerate(placed)]
    random.Random(3).shuffle(envelopes)
    for envelope in envelopes:
        xadd(redis_client, stream, envelope)
    StreamConsumer(name="projections", block_ms=5).run_until_idle()

    listing = customer_order_list(customer_id="alice")

    assert listing.count() == orders
    assert [s["placed_at"] for s in listing[0:orders]] == sorted(placed, reverse=True)
    assert newest_first(listing, 0, orders) == list(range(orders, 0, -1))
    assert newest_first(listing, 25, 35) == list(range(orders - 25, orders - 35, -1))  # chunks 2 and 1
    assert newest_first(listing, 0, 3) == [orders, orders - 1, orders - 2]
    assert newest_first(listing, orders - 2, orders + 5) == [2, 1]
    assert newest_first(listing, 79, 80) == [orders - 79]
    assert listing[0]["status"] == "PENDING"
    assert customer_order_list(customer_id="nobody").count() == 0
    assert customer_order_list(customer_id="nobody")[0:50] == []
    chunks = {row["_id"]: len(row["orders"]) for row in active_collection(CustomerOrderChunk).find()}
    assert chunks == {"alice|0": CHUNK_SIZE, "alice|1": CHUNK_SIZE, "alice|2": 30}
    assert verify_views() == []


def test_orders_placed_before_numbering_are_listed_after_the_numbered_ones_newest_first(redis_client, stream):
    start = datetime(2025, 1, 1, tzinfo=UTC)
    legacy = [start + timedelta(days=n) for n in range(7)]
    for moment in legacy:
        xadd(redis_client, stream, legacy_created("dave", moment))
    numbered = [start + timedelta(days=100 + n) for n in range(CHUNK_SIZE + 3)]
    for n, moment in enumerate(numbered):
        xadd(redis_client, stream, order_events("dave", n, moment)[0])
    StreamConsumer(name="projections", block_ms=5).run_until_idle()

    listing = customer_order_list(customer_id="dave")

    everything = sorted(numbered + legacy, reverse=True)
    assert listing.count() == len(everything)
    assert [s["placed_at"] for s in listing[0 : len(everything)]] == everything
    assert [s["placed_at"] for s in listing[CHUNK_SIZE : CHUNK_SIZE + 6]] == everything[CHUNK_SIZE : CHUNK_SIZE + 6]
    assert [s["placed_at"] for s in listing[CHUNK_SIZE + 5 :]] == everything[CHUNK_SIZE + 5 :]  # the legacy ones
    assert {s["customer_seq"] for s in listing[CHUNK_SIZE + 3 :]} == {0}
    count = active_collection(CustomerOrderCount).find_one({"_id": "dave"})
    assert count["counts"] == {"numbered": {"version": CHUNK_SIZE + 3}, "legacy": {"version": 7}}
    assert verify_views() == []


def test_a_new_order_rewrites_its_chunk_and_the_customers_count_and_nothing_that_grows_with_their_history(
    redis_client, stream, monkeypatch
):
    start = datetime(2024, 11, 15, 12, 0, tzinfo=UTC)
    placed = [start + timedelta(days=n) for n in range(2 * CHUNK_SIZE + 5)]
    for n, moment in enumerate(placed):
        xadd(redis_client, stream, order_events("carol", n, moment)[0])
    StreamConsumer(name="projections", block_ms=5).run_until_idle()

    changed: dict[str, list[str]] = {}

    def recording(collection, changes, **kwargs):
        rows = apply_changes(collection, changes, **kwargs)
        changed.setdefault(collection.name, []).extend(rows)
        return rows

    monkeypatch.setattr(projections, "apply_changes", recording)
    later = placed[-1] + timedelta(days=1)
    created, _reserved, confirmed = order_events("carol", len(placed), later)
    xadd(redis_client, stream, created)
    StreamConsumer(name="projections", block_ms=5).run_until_idle()

    assert changed["customer_order_chunks"] == ["carol|2"]
    assert changed["customer_order_counts"] == ["carol"]
    newest = customer_order_list(customer_id="carol")[0]
    assert (newest["placed_at"], newest["customer_seq"]) == (later, len(placed) + 1)

    # Its confirmation changes its summary in its chunk; the count is touched, found as it was, not written.
    changed.clear()
    xadd(redis_client, stream, confirmed)
    StreamConsumer(name="projections", block_ms=5).run_until_idle()

    assert changed["customer_order_chunks"] == ["carol|2"]
    assert changed["customer_order_counts"] == []
    assert customer_order_list(customer_id="carol")[0]["status"] == "CONFIRMED"
    assert verify_views() == []
    # A chunk holds each order's summary packed in one string, its version first.
    stored = active_collection(CustomerOrderChunk).find_one({"_id": "carol|2"})
    packed = pack_summary(
        version=2, status="CONFIRMED", placed_at=later, line_count=1, total_quantity=1, customer_seq=len(placed) + 1
    )
    assert stored["orders"][newest["id"]] == packed
    assert packed.startswith("2|CONFIRMED|") and unpack_summary(packed)["placed_at"] == later
